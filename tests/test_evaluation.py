import numpy as np
import pytest

from graphrec_jax.data.types import EvalSplit, Interactions
from graphrec_jax.evaluation import csr_by_user, evaluate_split, ranking_metrics, top_k_items


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


def test_top_k_masks_training_items_and_respects_candidates():
    users = np.eye(3, 4, dtype=np.float32)
    items = np.eye(6, 4, dtype=np.float32) + 0.01 * np.arange(6, dtype=np.float32)[:, None]
    train = Interactions(np.array([0, 0]), np.array([0, 5]))
    exclude = csr_by_user(train, 3)
    top, scores = top_k_items(users, items, np.array([0, 1]), 2, exclude=exclude, chunk_size=1)
    assert 0 not in top[0] and 5 not in top[0]
    assert top[1, 0] == 1
    top, _ = top_k_items(users, items, np.array([0]), 2, candidate_items=np.array([2, 3]))
    assert sorted(top[0].tolist()) == [2, 3]
    top, scores = top_k_items(users, items, np.array([0]), 3, candidate_items=np.array([2, 3]))
    assert top[0, 2] == -1 and scores[0, 2] == -np.inf


def test_evaluate_split_perfect_model_scores_one():
    # Representations that put each user's held-out item first.
    num_users, num_items = 4, 6
    user_repr = np.eye(num_users, num_items, dtype=np.float32)
    item_repr = np.eye(num_items, dtype=np.float32)
    test = Interactions(np.arange(4), np.arange(4))
    train = Interactions(np.array([0, 1]), np.array([5, 4]))
    metrics = evaluate_split(user_repr, item_repr, EvalSplit(test), csr_by_user(train, num_users), [1, 3])
    assert metrics["recall@1"] == 1.0 and metrics["ndcg@3"] == 1.0 and metrics["num_users"] == 4
