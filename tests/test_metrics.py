"""Ranking metrics against hand-computed values."""

import numpy as np
import pytest

from graphrec_jax.serving.metrics import ranking_metrics


def test_metrics_against_hand_computed_values():
    # user 0 ranks [1, 2, 3] and holds {2, 9}: one hit at rank 2.
    # user 1 ranks [4, 5, 6] and holds {4, 6, 7}: hits at ranks 1 and 3.
    top = np.array([[1, 2, 3], [4, 5, 6]])
    offsets = np.array([0, 2, 5])
    heldout = np.array([2, 9, 4, 6, 7])
    metrics = ranking_metrics(top, offsets, heldout, ks=[3, 1], num_candidates=10)
    d = 1 / np.log2(np.arange(2, 5))  # discounts of ranks 1..3
    assert metrics["recall@3"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert metrics["precision@3"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    ndcg0 = d[1] / (d[0] + d[1])  # ideal over min(2, 3) = 2 positions
    ndcg1 = (d[0] + d[2]) / (d[0] + d[1] + d[2])
    assert metrics["ndcg@3"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert metrics["hit_rate@3"] == pytest.approx(1.0)
    assert metrics["mrr@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert metrics["coverage@3"] == pytest.approx(6 / 10)
    assert metrics["recall@1"] == pytest.approx((0 + 1 / 3) / 2)
    assert metrics["ndcg@1"] == pytest.approx((0 + 1) / 2)
    assert metrics["mrr@1"] == pytest.approx(0.5)
    assert metrics["coverage@1"] == pytest.approx(2 / 10)


def test_empty_slots_never_count_as_hits():
    top = np.array([[3, -1, -1]])
    metrics = ranking_metrics(top, np.array([0, 1]), np.array([3]), ks=[3], num_candidates=1)
    assert metrics["recall@3"] == 1.0 and metrics["precision@3"] == pytest.approx(1 / 3)
