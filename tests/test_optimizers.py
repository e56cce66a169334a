"""The optimizer factory: Adam for the recommender, the text tower's own rate, schedules, clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphrec_jax.optimizers import adam, bert_decay_mask, make_optimizer
from graphrec_jax.text.finetune import TEXT_PARAMS


def test_finetune_optimizer_gives_the_tower_its_own_rate():
    params = {"node_embedding": jnp.ones(3), TEXT_PARAMS: {"w": jnp.ones(3)}}
    optimizer = make_optimizer(0.1, text_learning_rate=0.001, text_key=TEXT_PARAMS)
    state = optimizer.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = optimizer.update(grads, state, params)
    assert float(updates["node_embedding"][0]) == pytest.approx(-0.1, rel=1e-3)
    assert abs(float(updates[TEXT_PARAMS]["w"][0])) < 0.0011


def test_plain_optimizer_is_adam():
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, -3.0])}
    ours = make_optimizer(0.01)
    reference = __import__("optax").adam(0.01)
    updates, _ = ours.update(grads, ours.init(params), params)
    expected, _ = reference.update(grads, reference.init(params), params)
    np.testing.assert_allclose(updates["w"], expected["w"])


def test_warmup_then_linear_decay():
    params = {"w": jnp.zeros(2)}
    optimizer = adam(1.0, warmup_steps=2, total_steps=6)
    state = optimizer.init(params)
    sizes = []
    for _ in range(6):
        # with a constant gradient Adam moves each coordinate by exactly the current rate
        updates, state = optimizer.update({"w": jnp.array([3.0, -4.0])}, state, params)
        sizes.append(float(jnp.abs(updates["w"][0])))
    # the rate rises 0, 0.5 over the warm-up, then falls linearly from 1.0 to 0 at step 6
    np.testing.assert_allclose(sizes, [0.0, 0.5, 1.0, 0.75, 0.5, 0.25], atol=1e-5)


def test_clipping_bounds_the_global_norm_first():
    import optax

    params = {"w": jnp.zeros(2)}
    gradients = [jnp.array([30.0, 40.0]), jnp.array([0.3, -0.1]), jnp.array([-6.0, 8.0])]
    ours = adam(0.1, clip_norm=1.0)
    reference = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))
    unclipped = optax.adam(0.1)
    states = [ours.init(params), reference.init(params), unclipped.init(params)]
    for gradient in gradients:
        results = []
        for index, transform in enumerate((ours, reference, unclipped)):
            updates, states[index] = transform.update({"w": gradient}, states[index], params)
            results.append(updates["w"])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)
    assert not np.allclose(results[0], results[2])  # clipping changed Adam's moments


def test_weight_decay_follows_the_bert_mask():
    params = {"dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}, "LayerNorm": {"scale": jnp.ones(2)}}
    mask = bert_decay_mask(params)
    assert mask == {"dense": {"kernel": True, "bias": False}, "LayerNorm": {"scale": False}}
    optimizer = adam(0.1, weight_decay=0.5, decay_mask=mask)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zeros, optimizer.init(params), params)
    assert float(updates["dense"]["kernel"][0]) == pytest.approx(-0.1 * 0.5)
    assert float(updates["dense"]["bias"][0]) == 0.0 and float(updates["LayerNorm"]["scale"][0]) == 0.0


def test_text_rate_needs_the_towers_key():
    with pytest.raises(ValueError, match="text_key"):
        make_optimizer(0.1, text_learning_rate=0.01)
