"""Full-ranking evaluation: top-K over all candidate items with training items masked.

Ranking runs on device in fixed-size chunks of users (`ranking.top_k_items`); the metrics
(`metrics.ranking_metrics`) are computed on the host from the `[n_users, K]` top-K indices.
`evaluate_model` evaluates a model on every held-out split of its dataset; with
`beyond_accuracy=True` it adds diversity, coverage, novelty and exposure metrics
(`beyond_accuracy.beyond_accuracy_metrics`), off by default as they cost host time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import numpy as np

from graphrec_jax.data.types import EvalSplit
from graphrec_jax.graph.sparse import Csr
from graphrec_jax.models.setup import ModelSetup
from graphrec_jax.serving import propagation
from graphrec_jax.serving.beyond_accuracy import beyond_accuracy_metrics, item_popularity, labels_to_csr
from graphrec_jax.serving.metrics import ranking_metrics
from graphrec_jax.serving.ranking import csr_by_user, csr_rows, top_k_items


def evaluate_split(
    user_representations: jax.Array,
    item_representations: jax.Array,
    split: EvalSplit,
    train_by_user: tuple[np.ndarray, np.ndarray],
    ks: Sequence[int],
    *,
    chunk_size: int = 512,
    backend: str = "auto",
    beyond_accuracy: bool = False,
    item_categories: Sequence[Sequence[str]] | None = None,
) -> dict[str, float]:
    """Ranks every user with held-out items in `split` and returns `ranking_metrics` plus timing.

    With `beyond_accuracy`, also `beyond_accuracy_metrics` of the same lists: ILD in the space of
    `item_representations`, novelty from the training users per item (`train_by_user`), coverage
    and Gini over the split's candidates, and the category metrics when `item_categories` (per
    item its labels, `Dataset.item_categories`) is given.
    """
    started = time.perf_counter()
    num_users = user_representations.shape[0]
    heldout_offsets, heldout_items = csr_by_user(split.interactions, num_users)
    users = np.flatnonzero(np.diff(heldout_offsets) > 0)
    if len(users) == 0:
        raise ValueError("the evaluation split has no held-out interactions")
    top_items, _ = top_k_items(
        user_representations,
        item_representations,
        users,
        max(ks),
        exclude=train_by_user,
        candidate_items=split.candidate_items,
        user_chunk_size=chunk_size,
        backend=backend,
    )
    local, heldout = csr_rows((heldout_offsets, heldout_items), users)
    num_candidates = item_representations.shape[0] if split.candidate_items is None else len(split.candidate_items)
    metrics = ranking_metrics(top_items, local, heldout, ks, num_candidates)
    if beyond_accuracy:
        num_items = item_representations.shape[0]
        metrics.update(
            beyond_accuracy_metrics(
                top_items,
                ks,
                item_vectors=np.asarray(item_representations),
                item_categories=None if item_categories is None else labels_to_csr(item_categories, num_items),
                item_popularity=item_popularity(train_by_user, num_items),
                num_users=num_users,
                candidate_items=num_items if split.candidate_items is None else split.candidate_items,
            )
        )
    metrics["num_users"] = int(len(users))
    metrics["eval_seconds"] = time.perf_counter() - started
    return metrics


def evaluate_model(
    setup: ModelSetup,
    params,
    *,
    ks: Sequence[int],
    chunk_size: int = 512,
    backend: str = "auto",
    operators: Sequence[Csr] | None = None,
    chunk_rows: int = 65536,
    representations=None,
    beyond_accuracy: bool = False,
    item_categories: Sequence[Sequence[str]] | None = None,
) -> dict[str, float]:
    """Full-ranking metrics of a model on every evaluation split of `setup.dataset`.

    Args:
      setup: the model and its data; params: its parameters.
      ks: the cut-offs.
      chunk_size: users per ranking call.
      backend: one of `kernels.BACKENDS`.
      operators, chunk_rows: layer-wise propagation (`propagation.node_representations`).
      representations: `[n_node, d]` already computed, to skip propagation.
      beyond_accuracy: also report ILD, category ILD and coverage, catalogue coverage, novelty
        and Gini at every cut-off (see `evaluate_split`); off in training evaluations.
      item_categories: per item its labels for the category metrics; None: the dataset's.

    Returns:
      keys like "test/recall@20" (see `metrics.ranking_metrics`), plus "<split>/num_users"
      and "<split>/eval_seconds".
    """
    if representations is None:
        representations = propagation.node_representations(
            setup.model,
            params,
            setup.graph,
            setup.text_features,
            operators=operators,
            chunk_rows=chunk_rows,
            backend=backend,
        )
    dataset = setup.dataset
    users = representations[: dataset.num_users]
    items = representations[dataset.num_users :]
    train_by_user = csr_by_user(dataset.train, dataset.num_users)
    if item_categories is None:
        item_categories = dataset.item_categories
    results = {}
    for name, split in dataset.evaluation.items():
        metrics = evaluate_split(
            users,
            items,
            split,
            train_by_user,
            ks,
            chunk_size=chunk_size,
            backend=backend,
            beyond_accuracy=beyond_accuracy,
            item_categories=item_categories,
        )
        results.update({f"{name}/{key}": value for key, value in metrics.items()})
    return results
