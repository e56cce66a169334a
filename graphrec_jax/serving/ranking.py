"""Top-K ranking: exact top-K items per user by dot product, with per-user exclusions.

`top_k_items` scores users against the item table in fixed-size user chunks (one compiled call
per chunk shape) with the fused `kernels.top_k_scores`, which never builds the `[users, items]`
score matrix on CPU. For catalogues too large for one call, the item table is cut into shards
spread over the local devices and the per-shard top-K lists are merged; memory is one chunk's
`[chunk, K]` per shard plus the kernel's tiles, however many items there are.

Per-user item lists (seen items to exclude, held-out items to evaluate) are CSRs built by
`csr_by_user`; `csr_rows` takes the rows of some users out of one, the one helper every chunked
caller uses.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from graphrec_jax import kernels
from graphrec_jax.data.types import Interactions
from graphrec_jax.graph.sparse import pairs_by_row, ragged_arange


def csr_by_user(interactions: Interactions, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user sorted item lists: offsets `[num_users + 1]` int64 and items `[n]` int32."""
    return pairs_by_row(interactions.users, interactions.items, num_users)


def csr_rows(
    csr: tuple[np.ndarray, np.ndarray], rows: np.ndarray, num_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The rows `rows` of a CSR `(offsets, values)` as a CSR of their own.

    Args:
      csr: offsets `[n + 1]` and values `[nnz]`.
      rows: `[r]` int row indices (may repeat).
      num_rows: pad the result to this many rows (empty rows after the last); default `r`.

    Returns:
      (offsets `[num_rows + 1]` int32, values `[sum of the rows' lengths]` int32). Host numpy.
    """
    offsets, values = csr
    rows = np.asarray(rows, np.int64)
    num_rows = len(rows) if num_rows is None else num_rows
    starts, stops = offsets[rows], offsets[rows + 1]
    local = np.zeros(num_rows + 1, np.int64)
    np.cumsum(stops - starts, out=local[1 : len(rows) + 1])
    local[len(rows) + 1 :] = local[len(rows)]
    return local.astype(np.int32), np.asarray(values)[ragged_arange(starts, stops - starts)].astype(np.int32)


@functools.partial(jax.jit, static_argnames=("k", "backend"))
def _score_shard(user_representations, users, items, bias, offsets, excluded, start, *, k, backend):
    scores, indices = kernels.top_k_scores(
        user_representations[users],
        items,
        k,
        exclude_offsets=offsets,
        exclude_items=excluded - start,
        item_bias=bias,
        backend=backend,
    )
    return scores, jnp.where(indices >= 0, indices + start, -1)


# The native kernel holds no [chunk, items] score matrix, so its calls can be larger than the
# XLA path's; each call prepares the items once (the bfloat16 screen's table).
NATIVE_MIN_CHUNK = 4096


def _chunk_floor(user_chunk_size: int, backend: str) -> int:
    """Users per call: `user_chunk_size`, at least NATIVE_MIN_CHUNK where the native kernel scores."""
    native = backend == "native" or (
        backend == "auto" and kernels.native_available() and jax.local_devices()[0].platform == "cpu"
    )
    return max(user_chunk_size, NATIVE_MIN_CHUNK) if native else user_chunk_size


@functools.partial(jax.jit, static_argnames=("k",))
def _merge_shards(scores, indices, *, k):
    # Shards are concatenated in item order and each is sorted with ties by item, so top_k's
    # lower-position-first tie rule keeps ties in item order across shards too.
    top_scores, position = jax.lax.top_k(scores, k)
    return top_scores, jnp.take_along_axis(indices, position, axis=1)


def top_k_items(
    user_representations,
    item_representations,
    users: np.ndarray,
    k: int,
    *,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    candidate_items: np.ndarray | None = None,
    user_chunk_size: int = 512,
    item_shard_size: int | None = None,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-K items for each of `users` by dot product.

    Args:
      user_representations: `[num_users, d]` float32 (host or device); the rows of `users` are
        gathered on device.
      item_representations: `[num_items, d]` float32.
      users: `[u]` int user indices to rank for.
      k: list length (a positive int).
      exclude: per-user CSR (offsets `[num_users + 1]`, items) of items never to recommend,
        usually the training items (`csr_by_user`).
      candidate_items: `[c]` items allowed; None for all.
      user_chunk_size: users per compiled call (at least NATIVE_MIN_CHUNK with the native
        kernel, whose memory is O(chunk * K) plus its tiles; the XLA path holds a chunk's scores).
      item_shard_size: items per shard (None: one shard); shard `j` lives on local device
        `j % num_local_devices`.
      backend: one of `kernels.BACKENDS`.

    Returns:
      (items `[u, k]` int32, scores `[u, k]` float32), best first, ties to the lower item index;
      -1 / -inf where fewer than k candidates remain. Not jittable (host loop over chunks).
    """
    item_representations = jnp.asarray(item_representations, jnp.float32)
    num_items = item_representations.shape[0]
    shard_size = num_items if item_shard_size is None else max(1, min(item_shard_size, num_items))
    num_shards = max(1, -(-num_items // max(shard_size, 1)))
    allowed = np.zeros(num_shards * shard_size, np.float32)
    allowed[num_items:] = -np.inf  # padding rows of the last shard
    if candidate_items is not None:
        allowed[:num_items] = -np.inf
        allowed[np.asarray(candidate_items, np.int64)] = 0.0
    local_devices = jax.local_devices()
    shards = []
    for index in range(num_shards):
        device = local_devices[index % len(local_devices)]
        part = item_representations[index * shard_size : (index + 1) * shard_size]
        if len(part) < shard_size:
            part = jnp.concatenate([part, jnp.zeros((shard_size - len(part), part.shape[1]), part.dtype)])
        bias = allowed[index * shard_size : (index + 1) * shard_size]
        shards.append((device, jax.device_put(part, device), jax.device_put(bias, device)))
    # Users are gathered on every device that holds a shard.
    queries = {device: jax.device_put(jnp.asarray(user_representations, jnp.float32), device) for device, *_ in shards}

    users = np.asarray(users, np.int64)
    chunk = max(1, min(_chunk_floor(user_chunk_size, backend), len(users)))
    chunk = max(1, -(-len(users) // max(1, -(-len(users) // chunk))))  # equal chunks: little padding
    starts = range(0, len(users), chunk)
    exclusions = [
        csr_rows(exclude, users[first : first + chunk], chunk)
        if exclude is not None
        else (np.zeros(chunk + 1, np.int32), np.zeros(0, np.int32))
        for first in starts
    ]
    # One static exclusion length for every chunk: a single compiled call.
    width = max(1, max((len(items) for _, items in exclusions), default=1))
    all_items = np.empty((len(users), k), np.int32)
    all_scores = np.empty((len(users), k), np.float32)
    for (offsets, items), first in zip(exclusions, starts, strict=True):
        rows = users[first : first + chunk]
        padded = np.zeros(chunk, np.int32)
        padded[: len(rows)] = rows
        excluded = np.zeros(width, np.int32)
        excluded[: len(items)] = items
        results = []
        for index, (device, shard_items, shard_bias) in enumerate(shards):
            arguments = jax.device_put((padded, offsets, excluded, np.int32(index * shard_size)), device)
            results.append(
                _score_shard(
                    queries[device], arguments[0], shard_items, shard_bias, *arguments[1:], k=k, backend=backend
                )
            )
        if len(results) == 1:
            top_scores, top_items = results[0]
        else:
            scores = jnp.concatenate([jax.device_put(scores, local_devices[0]) for scores, _ in results], axis=1)
            indices = jnp.concatenate([jax.device_put(indices, local_devices[0]) for _, indices in results], axis=1)
            top_scores, top_items = _merge_shards(scores, indices, k=k)
        all_items[first : first + len(rows)] = np.asarray(top_items)[: len(rows)]
        all_scores[first : first + len(rows)] = np.asarray(top_scores)[: len(rows)]
    return all_items, all_scores
