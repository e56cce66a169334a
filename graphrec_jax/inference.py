"""Inference at scale: every node's representation layer by layer, and item-sharded top-K.

`propagate_layerwise` computes LightGCN over the whole graph one layer at a time, each layer
as a sequence of sparse x dense products over row blocks of the adjacency (`kernels.csr_matmul`
on a block's CSR slice), so besides the `[n, d]` layer arrays the memory is one block, and a
node's neighbourhood is never expanded per node. `node_representations` runs a whole
`RecommenderModel` this way (layer-0 inputs, propagation, fusion head), which is how a model
trained on sampled subgraphs is evaluated and served.

`top_k_sharded` ranks users against the item table in shards: each user chunk is scored
against every shard with the fused `kernels.top_k_scores` (shards spread over the local
devices), and the per-shard top-K lists are merged; memory is one chunk's `[chunk, K]` per
shard plus the kernel's tiles, however many items there are.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from graphrec_jax import kernels
from graphrec_jax.neighbor_sampling import Csr, graph_operator, ragged_arange

EDGE_BLOCK_MULTIPLE = 4096


def row_blocks(operator: Csr, chunk_rows: int) -> tuple[list[tuple[int, int]], int]:
    """Splits rows into blocks of at most `chunk_rows` rows and at most an edge budget.

    The edge budget is `chunk_rows` times the mean row length (at least the longest row),
    rounded up, so a block of hub rows is shorter than a block of ordinary ones.

    Returns:
      ([(first_row, end_row)], edge budget). Host-side.
    """
    lengths = operator.row_lengths()
    num_rows = operator.num_rows
    mean = len(operator.neighbors) / max(num_rows, 1)
    budget = max(int(math.ceil(chunk_rows * mean)), int(lengths.max(initial=0)), 1)
    budget = int(math.ceil(budget / EDGE_BLOCK_MULTIPLE) * EDGE_BLOCK_MULTIPLE)
    blocks = []
    first = 0
    while first < num_rows:
        by_edges = int(np.searchsorted(operator.offsets, operator.offsets[first] + budget, side="right")) - 1
        end = max(min(first + chunk_rows, by_edges, num_rows), first + 1)
        blocks.append((first, end))
        first = end
    return blocks, budget


@functools.partial(jax.jit, static_argnames=("backend",))
def _block_product(offsets, neighbors, weights, x, *, backend):
    return kernels.csr_matmul(offsets, neighbors, weights, x, backend=backend)


def sparse_dense(operator: Csr, x, *, chunk_rows: int = 65536, backend: str = "auto") -> np.ndarray:
    """`operator @ x` in row blocks: `x [n_cols, d] -> [n_rows, d]` float32 (host numpy).

    One compiled call per block shape; not jittable as a whole (host loop over blocks).
    """
    blocks, edge_budget = row_blocks(operator, chunk_rows)
    x = jnp.asarray(x, jnp.float32)
    out = np.empty((operator.num_rows, x.shape[1]), np.float32)
    rows = min(chunk_rows, max(operator.num_rows, 1))
    offsets = np.empty(rows + 1, np.int32)
    neighbors = np.zeros(edge_budget, np.int32)
    weights = np.zeros(edge_budget, np.float32)
    for first, end in blocks:
        start, stop = operator.offsets[first], operator.offsets[end]
        offsets[: end - first + 1] = operator.offsets[first : end + 1] - start
        offsets[end - first + 1 :] = stop - start  # empty rows after the block's last
        neighbors[: stop - start] = operator.neighbors[start:stop]
        weights[: stop - start] = operator.weights[start:stop]
        weights[stop - start :] = 0.0
        product = _block_product(offsets, neighbors, weights, x, backend=backend)
        out[first:end] = np.asarray(product)[: end - first]
    return out


def propagate_layerwise(
    operators: Sequence[Csr], embeddings, *, chunk_rows: int = 65536, backend: str = "auto"
) -> np.ndarray:
    """LightGCN over per-layer operators, `[n, d] -> [n, d]` float32, layer by layer.

    With operators `P_1 .. P_L` (seeds outwards) the result is
    `(E + P_1 E + P_1 P_2 E + ... + P_1..P_L E) / (L + 1)`, evaluated as
    `E + P_1 (E + P_2 (E + ...))`; with one operator repeated (the full graph) this is
    `lightgcn_propagate`. Memory: three `[n, d]` arrays plus one row block.
    """
    embeddings = np.asarray(embeddings, np.float32)
    total = embeddings
    for operator in reversed(operators):
        total = embeddings + sparse_dense(operator, total, chunk_rows=chunk_rows, backend=backend)
    return total / np.float32(len(operators) + 1)


def node_representations(
    model,
    params,
    graph: jraph.GraphsTuple,
    text_features: np.ndarray | None = None,
    *,
    operators: Sequence[Csr] | None = None,
    chunk_rows: int = 65536,
    backend: str = "auto",
) -> np.ndarray:
    """Every node's representation, `[n_node, embedding_dim]` float32, propagated layer-wise.

    Args:
      model: a `RecommenderModel`; params: its parameters.
      graph: the full training graph (unpadded).
      text_features: `[n_node, text_dim]` for the text fusions.
      operators: one `Csr` per layer, seeds outwards (`NeighborSampler.hop_operators()`);
        None propagates over `graph` itself.
      chunk_rows: rows per block.

    Equals `model.apply(params, graph, text_features)[0]` up to float rounding. Not jittable.
    """
    variables = {"params": params}
    if model.fusion == "text_only":
        return np.asarray(jax.jit(model.apply)(variables, graph, text_features)[0])
    if operators is None:
        operators = [graph_operator(graph)] * model.num_layers
    if len(operators) != model.num_layers:
        raise ValueError(f"{len(operators)} operators for a model of {model.num_layers} layers")
    # The model with no layers returns its layer-0 inputs (ids and projected text).
    inputs = np.asarray(jax.jit(model.clone(num_layers=0).apply)(variables, graph, text_features)[1])
    if model.architecture == "lightgcn":
        propagated = propagate_layerwise(operators, inputs, chunk_rows=chunk_rows, backend=backend)
    else:
        if any(operator is not operators[0] for operator in operators):
            raise ValueError("GCN layer-wise inference needs one operator for every layer")
        total, current = inputs, inputs
        for index in range(model.num_layers):
            layer = params[f"gcn_{index}"]
            projected = current @ np.asarray(layer["linear"]["kernel"])
            aggregated = sparse_dense(operators[0], projected, chunk_rows=chunk_rows, backend=backend)
            current = np.maximum(aggregated + np.asarray(layer["bias"]), 0.0)
            total = total + current
        propagated = total / np.float32(model.num_layers + 1)
    if model.fusion != "concat":
        return propagated
    head = jax.jit(nn.Dense(model.embedding_dim).apply)
    out = np.empty_like(propagated)
    for first in range(0, len(propagated), chunk_rows):
        joined = np.concatenate([propagated[first : first + chunk_rows], text_features[first : first + chunk_rows]], -1)
        out[first : first + chunk_rows] = np.asarray(head({"params": params["head"]}, joined))
    return out


@functools.partial(jax.jit, static_argnames=("k", "backend"))
def _shard_top_k(queries, items, bias, offsets, excluded, start, *, k, backend):
    scores, indices = kernels.top_k_scores(
        queries, items, k, exclude_offsets=offsets, exclude_items=excluded - start, item_bias=bias, backend=backend
    )
    return scores, jnp.where(indices >= 0, indices + start, -1)


@functools.partial(jax.jit, static_argnames=("k",))
def _merge_top_k(scores, indices, *, k):
    # Shards are concatenated in item order and each is sorted with ties by item, so top_k's
    # lower-position-first tie rule keeps ties in item order across shards too.
    top_scores, position = jax.lax.top_k(scores, k)
    return top_scores, jnp.take_along_axis(indices, position, axis=1)


def top_k_sharded(
    user_representations,
    item_representations,
    users: np.ndarray,
    k: int,
    *,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    candidate_items: np.ndarray | None = None,
    user_chunk_size: int = 1024,
    item_shard_size: int = 1 << 18,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-K items per user over item shards; the same result as `evaluation.top_k_items`.

    Args:
      user_representations: `[num_users, d]`; item_representations: `[num_items, d]`.
      users: `[u]` int user indices to rank for.
      k: list length.
      exclude: per-user CSR (offsets `[num_users + 1]`, items) of items never to recommend.
      candidate_items: `[c]` items allowed; None for all.
      user_chunk_size: users per call; item_shard_size: items per shard. Shard `j` lives on
        local device `j % num_local_devices`.

    Returns:
      (items `[u, k]` int32, scores `[u, k]` float32), best first, ties to the lower item
      index; -1 / -inf where fewer than k candidates remain. Not jittable (host loops).
    """
    user_representations = np.asarray(user_representations, np.float32)
    item_representations = np.asarray(item_representations, np.float32)
    num_items, dim = item_representations.shape
    shard_size = max(1, min(item_shard_size, num_items))
    num_shards = -(-num_items // shard_size)
    allowed = np.zeros(num_shards * shard_size, np.float32)
    allowed[num_items:] = -np.inf  # padding rows of the last shard
    if candidate_items is not None:
        allowed[:num_items] = -np.inf
        allowed[np.asarray(candidate_items)] = 0.0
    padded_items = np.zeros((num_shards * shard_size, dim), np.float32)
    padded_items[:num_items] = item_representations
    local_devices = jax.local_devices()
    shards = []
    for index in range(num_shards):
        device = local_devices[index % len(local_devices)]
        part = slice(index * shard_size, (index + 1) * shard_size)
        shards.append((device, jax.device_put(padded_items[part], device), jax.device_put(allowed[part], device)))
    users = np.asarray(users, np.int64)
    chunk = max(1, min(user_chunk_size, len(users)))
    exclusions = [
        _chunk_exclusions(users[first : first + chunk], chunk, exclude) for first in range(0, len(users), chunk)
    ]
    width = max(1, max(len(items) for _, items in exclusions))
    all_items = np.empty((len(users), k), np.int32)
    all_scores = np.empty((len(users), k), np.float32)
    for number, first in enumerate(range(0, len(users), chunk)):
        rows = users[first : first + chunk]
        queries = np.zeros((chunk, dim), np.float32)
        queries[: len(rows)] = user_representations[rows]
        offsets, items = exclusions[number]
        excluded = np.zeros(width, np.int32)
        excluded[: len(items)] = items
        results = []
        for index, (device, shard_items, shard_bias) in enumerate(shards):
            arguments = jax.device_put((queries, offsets, excluded, np.int32(index * shard_size)), device)
            results.append(_shard_top_k(arguments[0], shard_items, shard_bias, *arguments[1:], k=k, backend=backend))
        scores = jnp.concatenate([jax.device_put(scores, local_devices[0]) for scores, _ in results], axis=1)
        indices = jnp.concatenate([jax.device_put(indices, local_devices[0]) for _, indices in results], axis=1)
        top_scores, top_items = _merge_top_k(scores, indices, k=k)
        all_items[first : first + len(rows)] = np.asarray(top_items)[: len(rows)]
        all_scores[first : first + len(rows)] = np.asarray(top_scores)[: len(rows)]
    return all_items, all_scores


def _chunk_exclusions(rows: np.ndarray, chunk: int, exclude) -> tuple[np.ndarray, np.ndarray]:
    """The exclusion CSR of one user chunk: offsets `[chunk + 1]` int32, items int32."""
    if exclude is None:
        return np.zeros(chunk + 1, np.int32), np.zeros(0, np.int32)
    offsets, items = exclude
    starts, stops = offsets[rows], offsets[rows + 1]
    lengths = np.zeros(chunk, np.int64)
    lengths[: len(rows)] = stops - starts
    local = np.zeros(chunk + 1, np.int64)
    np.cumsum(lengths, out=local[1:])
    return local.astype(np.int32), np.asarray(items)[ragged_arange(starts, stops - starts)].astype(np.int32)
