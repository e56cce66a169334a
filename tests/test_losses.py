import jax.numpy as jnp
import numpy as np
import pytest

from graphrec_jax.models import losses


def _arrays(seed=0, b=5, d=3, n=1):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(b, d)).astype(np.float32),
        rng.normal(size=(b, d)).astype(np.float32),
        rng.normal(size=(b, n, d)).astype(np.float32),
    )


def test_bpr_matches_formula_and_ignores_padding():
    user, positive, negative = _arrays()
    mask = np.array([True, True, True, False, False])
    expected = sum(np.log1p(np.exp(user[i] @ negative[i, 0] - user[i] @ positive[i])) for i in range(3))
    result = losses.bpr_loss_sum(user=user, positive=positive, negative=negative, mask=mask)
    assert float(result) == pytest.approx(expected, rel=1e-5)
    garbage = negative.copy()
    garbage[3:] = 1e6
    assert float(losses.bpr_loss_sum(user=user, positive=positive, negative=garbage, mask=mask)) == pytest.approx(
        expected, rel=1e-5
    )


def test_bce_counts_positive_and_mean_negative():
    user, positive, negative = _arrays(n=2)
    mask = np.ones(5, bool)
    sp = lambda v: np.log1p(np.exp(v))
    expected = sum(
        sp(-(user[i] @ positive[i])) + np.mean([sp(user[i] @ negative[i, j]) for j in range(2)]) for i in range(5)
    )
    result = losses.bce_loss_sum(user=user, positive=positive, negative=negative, mask=mask)
    assert float(result) == pytest.approx(expected, rel=1e-5)


def test_sampled_softmax_against_explicit_softmax():
    user, positive, _ = _arrays()
    items = np.array([3, 4, 3, 5, 6])  # rows 0 and 2 share a positive item
    mask = np.array([True, True, True, True, False])
    result = losses.sampled_softmax_loss_sum(
        user=user,
        candidates=positive,
        candidate_items=items,
        candidate_mask=mask,
        target=np.arange(5),
        mask=mask,
        temperature=0.5,
    )
    expected = 0.0
    for i in range(4):
        allowed = [j for j in range(4) if j == i or items[j] != items[i]]
        logits = np.array([user[i] @ positive[j] / 0.5 for j in allowed])
        expected += -(logits[allowed.index(i)] - np.log(np.exp(logits).sum()))
    assert float(result) == pytest.approx(expected, rel=1e-5)


def test_l2_penalty_is_half_squared_norm_of_real_rows():
    a = jnp.ones((3, 2))
    b = jnp.full((3, 1, 2), 2.0)
    mask = jnp.array([True, False, True])
    assert float(losses.l2_penalty_sum(a, b, mask=mask)) == pytest.approx(0.5 * (2 * 2 + 2 * 8))
