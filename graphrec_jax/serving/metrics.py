"""Ranking metrics from top-K lists, with LightGCN's definitions.

Averaged over users with at least one held-out item:
  recall@K = hits / |held-out items|; precision@K = hits / K; hit_rate@K = [hits > 0];
  ndcg@K = DCG / ideal DCG, the ideal over min(|held-out|, K) positions, gains 1/log2(rank+1);
  mrr@K = 1 / rank of the first hit (0 without a hit);
  coverage@K = distinct items recommended to the evaluated users / number of candidates.
Beyond-accuracy metrics (diversity, novelty, exposure) are in `beyond_accuracy`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ranking_metrics(
    top_items: np.ndarray,
    heldout_offsets: np.ndarray,
    heldout_items: np.ndarray,
    ks: Sequence[int],
    num_candidates: int,
) -> dict[str, float]:
    """Metrics from top-K lists.

    Args:
      top_items: `[u, K]` int item indices, best first (-1 marks an empty slot).
      heldout_offsets: `[u + 1]` offsets into `heldout_items`, one row per ranked user.
      heldout_items: `[n]` int held-out items, each row's items sorted ascending.
      ks: cut-offs, each <= K.
      num_candidates: how many items were ranked (for coverage).

    Returns:
      {"recall@k", "ndcg@k", "precision@k", "hit_rate@k", "mrr@k", "coverage@k"} for each k.
    """
    num_users, width = top_items.shape
    counts = np.diff(heldout_offsets)
    if np.any(counts <= 0):
        raise ValueError("every ranked user needs at least one held-out item")
    if max(ks) > width:
        raise ValueError(f"cut-off {max(ks)} exceeds the {width} items ranked per user")
    rows = np.repeat(np.arange(num_users, dtype=np.int64), counts)
    stride = int(max(heldout_items.max(), top_items.max())) + 2
    heldout_keys = np.sort(rows * stride + heldout_items)
    keys = np.arange(num_users, dtype=np.int64)[:, None] * stride + top_items
    position = np.minimum(np.searchsorted(heldout_keys, keys), len(heldout_keys) - 1)
    hits = (heldout_keys[position] == keys) & (top_items >= 0)
    discount = 1.0 / np.log2(np.arange(2, width + 2))
    metrics = {}
    for k in ks:
        hits_k = hits[:, :k]
        count = hits_k.sum(axis=1)
        ideal = np.cumsum(discount[:k])[np.minimum(counts, k) - 1]
        first = np.where(hits_k.any(axis=1), hits_k.argmax(axis=1) + 1, np.inf)
        recommended = top_items[:, :k]
        metrics[f"recall@{k}"] = float(np.mean(count / counts))
        metrics[f"ndcg@{k}"] = float(np.mean((hits_k @ discount[:k]) / ideal))
        metrics[f"precision@{k}"] = float(np.mean(count / k))
        metrics[f"hit_rate@{k}"] = float(np.mean(count > 0))
        metrics[f"mrr@{k}"] = float(np.mean(1.0 / first))
        metrics[f"coverage@{k}"] = float(len(np.unique(recommended[recommended >= 0])) / max(num_candidates, 1))
    return metrics
