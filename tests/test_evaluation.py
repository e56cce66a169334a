"""Full-ranking evaluation of a split."""

import numpy as np

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
