"""Full-ranking evaluation: top-K over all candidate items with training items masked, and
the ranking metrics with LightGCN's definitions.

Ranking runs on device in fixed-size chunks of users (bounded memory, one compilation);
metrics are computed on the host from the `[n_users, K]` top-K indices.

Metric definitions, averaged over users with at least one held-out item:
  recall@K = hits / |held-out items|; precision@K = hits / K; hit_rate@K = [hits > 0];
  ndcg@K = DCG / ideal DCG, the ideal over min(|held-out|, K) positions, gains 1/log2(rank+1);
  mrr@K = 1 / rank of the first hit (0 without a hit);
  coverage@K = distinct items recommended to the evaluated users / number of candidates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from graphrec_jax import kernels
from graphrec_jax.data.types import EvalSplit, Interactions


def csr_by_user(interactions: Interactions, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user sorted item lists: offsets `[num_users + 1]` int64 and items `[n]` int32."""
    order = np.lexsort((interactions.items, interactions.users))
    offsets = np.searchsorted(interactions.users[order], np.arange(num_users + 1)).astype(np.int64)
    return offsets, interactions.items[order].astype(np.int32)


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


def top_k_items(
    user_representations: jax.Array,
    item_representations: jax.Array,
    users: np.ndarray,
    k: int,
    *,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    candidate_items: np.ndarray | None = None,
    chunk_size: int = 512,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-K items for each of `users`, ranked by dot product, on device in user chunks.

    Args:
      user_representations: `[num_users, d]`; item_representations: `[num_items, d]`.
      users: `[u]` int user indices to rank for.
      k: list length.
      exclude: per-user CSR (offsets `[num_users + 1]`, items) of items never to recommend
        (usually the training items).
      candidate_items: `[c]` items allowed; None for all.
      chunk_size: users per device call; memory is O(chunk_size * K) plus the kernel's tiles.

    Returns:
      (items `[u, k]` int32, scores `[u, k]` float32); -1 / -inf pad rows with fewer candidates.
      Not jittable as a whole (host loop over chunks; each chunk runs one compiled call).
    """
    num_items = item_representations.shape[0]
    bias = None
    if candidate_items is not None:
        allowed = np.full(num_items, -np.inf, np.float32)
        allowed[np.asarray(candidate_items)] = 0.0
        bias = jnp.asarray(allowed)
    users = np.asarray(users, np.int64)
    chunk_size = max(1, min(chunk_size, len(users)))
    num_chunks = -(-len(users) // chunk_size)
    chunk_offsets = []
    chunk_items = []
    for index in range(num_chunks):
        chunk = users[index * chunk_size : (index + 1) * chunk_size]
        if exclude is None:
            chunk_offsets.append(np.zeros(chunk_size + 1, np.int32))
            chunk_items.append(np.zeros(0, np.int32))
            continue
        offsets, items = exclude
        starts, stops = offsets[chunk], offsets[chunk + 1]
        lengths = np.concatenate([stops - starts, np.zeros(chunk_size - len(chunk), np.int64)])
        local = np.zeros(chunk_size + 1, np.int64)
        np.cumsum(lengths, out=local[1:])
        gather = np.repeat(starts - local[: len(chunk)], stops - starts) + np.arange(local[len(chunk)])
        chunk_offsets.append(local.astype(np.int32))
        chunk_items.append(items[gather].astype(np.int32))
    # One static exclusion length for every chunk: a single compiled call.
    width = max(1, max(len(items) for items in chunk_items))
    rank = _ranker(k, backend)
    all_items = np.empty((len(users), k), np.int32)
    all_scores = np.empty((len(users), k), np.float32)
    for index in range(num_chunks):
        chunk = users[index * chunk_size : (index + 1) * chunk_size]
        padded = np.zeros(chunk_size, np.int64)
        padded[: len(chunk)] = chunk
        excluded = np.zeros(width, np.int32)
        excluded[: len(chunk_items[index])] = chunk_items[index]
        scores, items = rank(
            user_representations,
            item_representations,
            jnp.asarray(padded),
            chunk_offsets[index],
            excluded,
            bias,
        )
        all_items[index * chunk_size : index * chunk_size + len(chunk)] = np.asarray(items)[: len(chunk)]
        all_scores[index * chunk_size : index * chunk_size + len(chunk)] = np.asarray(scores)[: len(chunk)]
    return all_items, all_scores


_RANKERS: dict = {}


def _ranker(k: int, backend: str):
    if (k, backend) not in _RANKERS:

        @jax.jit
        def rank(user_representations, item_representations, users, offsets, excluded, bias):
            return kernels.top_k_scores(
                user_representations[users],
                item_representations,
                k,
                exclude_offsets=offsets,
                exclude_items=excluded,
                item_bias=bias,
                backend=backend,
            )

        _RANKERS[(k, backend)] = rank
    return _RANKERS[(k, backend)]


def evaluate_split(
    user_representations: jax.Array,
    item_representations: jax.Array,
    split: EvalSplit,
    train_by_user: tuple[np.ndarray, np.ndarray],
    ks: Sequence[int],
    *,
    chunk_size: int = 512,
    backend: str = "auto",
) -> dict[str, float]:
    """Ranks every user with held-out items in `split` and returns `ranking_metrics` plus timing."""
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
        chunk_size=chunk_size,
        backend=backend,
    )
    starts, stops = heldout_offsets[users], heldout_offsets[users + 1]
    local = np.zeros(len(users) + 1, np.int64)
    np.cumsum(stops - starts, out=local[1:])
    gather = np.repeat(starts - local[:-1], stops - starts) + np.arange(local[-1])
    num_candidates = item_representations.shape[0] if split.candidate_items is None else len(split.candidate_items)
    metrics = ranking_metrics(top_items, local, heldout_items[gather], ks, num_candidates)
    metrics["num_users"] = int(len(users))
    metrics["eval_seconds"] = time.perf_counter() - started
    return metrics
