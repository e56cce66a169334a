"""Text-graph alignment: the InfoNCE value against numpy, its gradient, the step, validation,
and 1 against 2 devices."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from graphrec_jax.config import ConfigError, validate_config
from graphrec_jax.graph.build import build_interaction_graph
from graphrec_jax.graph.semantic import semantic_item_links
from graphrec_jax.models import losses
from graphrec_jax.models.network import RecommenderModel
from graphrec_jax.optimizers import make_optimizer
from graphrec_jax.training.batches import Batch
from graphrec_jax.training.step import create_train_state, make_train_step
from tests.helpers import REPO_ROOT


def numpy_infonce(representation, text, items, mask, temperature):
    """Row i: -log softmax_j(cos(r_i, t_j) / T) at j = i, over real texts whose item differs
    from row i's (its own text aside); summed over real rows."""
    r = representation / np.maximum(np.linalg.norm(representation, axis=1, keepdims=True), 1e-12)
    t = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    total = 0.0
    for i in range(len(r)):
        if not mask[i]:
            continue
        logits = []
        for j in range(len(t)):
            if mask[j] and (j == i or items[j] != items[i]):
                logits.append((j, float(r[i] @ t[j]) / temperature))
        values = np.array([value for _, value in logits])
        own = [value for j, value in logits if j == i][0]
        total += -(own - np.log(np.sum(np.exp(values))))
    return total


def test_alignment_loss_matches_numpy_and_has_finite_gradients():
    rng = np.random.default_rng(0)
    representation = rng.normal(size=(6, 4)).astype(np.float32)
    text = rng.normal(size=(6, 4)).astype(np.float32)
    items = np.array([3, 1, 3, 7, 2, 0])  # rows 0 and 2 share an item: not each other's negatives
    mask = np.array([True, True, True, True, True, False])
    text[5] = 0.0  # a padding row: zero, masked
    representation[5] = 0.0

    def loss(representation, text):
        return losses.alignment_loss_sum(
            representation=representation,
            text=text,
            text_items=jnp.asarray(items),
            text_mask=jnp.asarray(mask),
            target=jnp.arange(6),
            mask=jnp.asarray(mask),
            temperature=0.3,
        )

    value = loss(jnp.asarray(representation), jnp.asarray(text))
    np.testing.assert_allclose(value, numpy_infonce(representation, text, items, mask, 0.3), rtol=1e-5)
    grads = jax.grad(loss, argnums=(0, 1))(jnp.asarray(representation), jnp.asarray(text))
    for grad in grads:
        assert np.all(np.isfinite(grad))
        np.testing.assert_allclose(grad[5], 0.0)  # padding gets no gradient
    # aligned pairs (text = representation, far apart) give a lower loss than shuffled ones
    aligned = loss(jnp.asarray(representation), jnp.asarray(representation))
    assert aligned < value


def _step_inputs(align_weight):
    rng = np.random.default_rng(1)
    num_users, num_items, dim = 12, 9, 5
    users = np.repeat(np.arange(num_users), 3).astype(np.int32)
    items = rng.integers(0, 7, len(users)).astype(np.int32)  # items 7, 8 are cold
    features = rng.normal(size=(num_items, dim)).astype(np.float32)
    graph = build_interaction_graph(num_users, num_items, users, items, item_links=semantic_item_links(features, 2))
    text = np.concatenate([rng.normal(size=(num_users, dim)), features]).astype(np.float32)
    model = RecommenderModel(
        num_nodes=num_users + num_items,
        embedding_dim=8,
        num_layers=2,
        fusion="text_node_input",
        id_dropout=0.3,
        text_alignment=align_weight > 0,
    )
    params = model.init(jax.random.PRNGKey(0), graph, text)["params"]
    optimizer = make_optimizer(1e-2)
    step = make_train_step(
        model,
        optimizer,
        loss="bce",
        l2_weight=1e-4,
        num_users=num_users,
        axis_name=None,
        align_weight=align_weight,
        align_temperature=0.2,
    )
    batch = Batch(
        users=jnp.asarray(users[:8]),
        positives=jnp.asarray(items[:8]),
        negatives=jnp.asarray(rng.integers(0, 7, (8, 2)).astype(np.int32)),
        mask=jnp.asarray(np.arange(8) < 7),
        graph=jax.tree.map(jnp.asarray, graph),
        text_features=jnp.asarray(text),
    )
    return model, params, optimizer, step, batch


def test_step_adds_the_alignment_loss_and_trains_the_projection():
    model, params, optimizer, step, batch = _step_inputs(align_weight=0.5)
    assert "align_projection" in params
    state = create_train_state(params, optimizer)
    state, metrics = jax.jit(step)(state, batch, jax.random.PRNGKey(0))
    assert np.isfinite(metrics["align_loss"]) and metrics["align_loss"] > 0
    np.testing.assert_allclose(
        metrics["loss"], metrics["ranking_loss"] + 1e-4 * metrics["l2_penalty"] + 0.5 * metrics["align_loss"], rtol=1e-5
    )
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
        assert np.all(np.isfinite(leaf)), path
    before = params["align_projection"]["output"]["kernel"]
    assert not np.allclose(state.params["align_projection"]["output"]["kernel"], before)
    # off: no projection, no extra metric
    _, plain_params, plain_optimizer, plain_step, plain_batch = _step_inputs(align_weight=0.0)
    assert "align_projection" not in plain_params
    _, plain_metrics = jax.jit(plain_step)(
        create_train_state(plain_params, plain_optimizer), plain_batch, jax.random.PRNGKey(0)
    )
    assert "align_loss" not in plain_metrics


def test_alignment_config_validation_names_the_keys():
    config = test_config.get_config()
    config.train.align_weight = 0.5
    with pytest.raises(ConfigError, match="train.align_weight"):
        validate_config(config)  # graph_only reads no text
    config.model.fusion = "text_node_input"
    config.model.text.encoder = "some/bert"
    validate_config(config)
    config.train.align_weight = -1.0
    with pytest.raises(ConfigError, match="train.align_weight"):
        validate_config(config)
    config.train.align_weight = 0.5
    config.train.align_temperature = 0.0
    with pytest.raises(ConfigError, match="train.align_temperature"):
        validate_config(config)


def test_one_and_two_devices_give_the_same_parameters_with_alignment(tiny_bert, tmp_path):
    for count in (1, 2):
        env = dict(
            os.environ,
            XLA_FLAGS=f"--xla_force_host_platform_device_count={count}",
            PYTHONPATH=str(REPO_ROOT),
            GRAPHREC_CACHE_DIR=str(tmp_path / "cache"),
        )
        result = subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "tests" / "workers" / "alignment_equivalence.py"),
                str(tmp_path / f"d{count}.npz"),
                tiny_bert,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = np.load(tmp_path / "d1.npz"), np.load(tmp_path / "d2.npz")
    assert int(one["devices"]) == 1 and int(two["devices"]) == 2
    assert len(one["losses"]) == 6
    assert any("align_projection" in key for key in one.files)
    for key in set(one.files) - {"devices"}:
        assert np.max(np.abs(one[key] - two[key])) < 1e-5, key
