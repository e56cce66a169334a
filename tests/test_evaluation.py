"""Full-ranking evaluation of a split."""

import numpy as np
import pytest

from graphrec_jax.data.types import EvalSplit, Interactions
from graphrec_jax.serving.evaluation import evaluate_split
from graphrec_jax.serving.ranking import csr_by_user


def test_evaluate_split_perfect_model_scores_one():
    # Representations that put each user's held-out item first.
    num_users, num_items = 4, 6
    user_repr = np.eye(num_users, num_items, dtype=np.float32)
    item_repr = np.eye(num_items, dtype=np.float32)
    test = Interactions(np.arange(4), np.arange(4))
    train = Interactions(np.array([0, 1]), np.array([5, 4]))
    metrics = evaluate_split(user_repr, item_repr, EvalSplit(test), csr_by_user(train, num_users), [1, 3])
    assert metrics["recall@1"] == 1.0 and metrics["ndcg@3"] == 1.0 and metrics["num_users"] == 4


def test_evaluate_split_beyond_accuracy_by_hand():
    # Three users, four items; each user's held-out item first, training items masked.
    user_repr = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    item_repr = np.array([[2, 0], [0, 2], [1, 0], [0, 1]], np.float32)
    train = Interactions(np.array([0, 1, 2, 2]), np.array([2, 3, 0, 2]))
    test = Interactions(np.array([0, 1, 2]), np.array([0, 1, 1]))
    by_user = csr_by_user(train, 3)
    categories = [("a",), ("b",), ("a", "c"), ()]
    plain = evaluate_split(user_repr, item_repr, EvalSplit(test), by_user, [2])
    assert not any(key.startswith(("ild", "novelty", "gini")) for key in plain)
    metrics = evaluate_split(
        user_repr, item_repr, EvalSplit(test), by_user, [2], beyond_accuracy=True, item_categories=categories
    )
    # Lists: user 0 [0, 1] (item 3 ties item 1 at 0 and loses to the lower index), user 1 [1, 0],
    # user 2 [1, 3]. Items 0 and 1 are orthogonal (distance 1), items 1 and 3 parallel (distance 0).
    assert metrics["ild@2"] == pytest.approx((1 + 1 + 0) / 3)
    # Jaccard distances: {a} vs {b} = 1, twice; user 2's item 3 has no categories: no pair.
    assert metrics["ild_category@2"] == pytest.approx(1.0)
    assert metrics["category_coverage@2"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3)
    assert metrics["coverage@2"] == pytest.approx(3 / 4)
    # Training users per item: 0 -> 1, 1 -> 0 (counts as 1), 3 -> 1; novelty = log2(3) for every slot.
    assert metrics["novelty@2"] == pytest.approx(np.log2(3))
    # Exposure of items 0..3 ascending: 0, 1, 2, 3: G = (-3*0 - 1*1 + 1*2 + 3*3) / (4 * 6).
    assert metrics["gini@2"] == pytest.approx(10 / 24)
