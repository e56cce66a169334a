"""Sparse utilities on the host: the `Csr` operator, row blocks, and block-wise sparse x dense.

A `Csr` is the normalised adjacency (or a sampled / importance neighbourhood table) by rows.
`sparse_dense` multiplies one by a dense matrix in row blocks of bounded size, each block one
compiled `kernels.csr_matmul` call, so memory stays one block whatever the graph's size.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from graphrec_jax import kernels
from graphrec_jax.graph.build import SOCIAL_REVERSE_EDGE, csr_offsets, edge_kinds

EDGE_BLOCK_MULTIPLE = 4096


def pairs_by_row(rows: np.ndarray, columns: np.ndarray, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) pairs as a CSR: offsets `[num_rows + 1]` int64 and each row's columns in
    ascending order `[n]` int32 (duplicates kept). Host numpy.

    One sort of the pairs packed in int64 keys: ten times faster than a lexsort.
    """
    columns = np.asarray(columns)
    span = int(columns.max()) + 1 if len(columns) else 1
    keys = np.sort(np.asarray(rows, np.int64) * span + columns)
    sorted_rows = keys // span
    offsets = np.searchsorted(sorted_rows, np.arange(num_rows + 1)).astype(np.int64)
    return offsets, (keys - sorted_rows * span).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Csr:
    """A sparse operator by rows: row `r` aggregates `weights[j] * x[neighbors[j]]` over
    `j in offsets[r]:offsets[r + 1]`. offsets int64 `[n + 1]`, neighbors int32 `[nnz]`,
    weights float32 `[nnz]`, and optionally kinds int8 `[nnz]`: the edge kind of each entry
    (`graph.build.INTERACTION_EDGE`, ...)."""

    offsets: np.ndarray
    neighbors: np.ndarray
    weights: np.ndarray
    kinds: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return len(self.offsets) - 1

    def row_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def graph_operator(graph: jraph.GraphsTuple) -> Csr:
    """What one propagation step multiplies by: the sum of an (unpadded) graph's blocks (the
    transpose block of directed social links aside), each row's entries block by block, with
    their kinds. Host-side."""
    senders = np.asarray(graph.senders, np.int32)
    weights = np.asarray(graph.edges["weight"], np.float32)
    kinds = np.asarray(graph.edges["kind"], np.int8)
    rows = [np.asarray(csr_offsets(graph, kind), np.int64) for kind in edge_kinds(graph) if kind != SOCIAL_REVERSE_EDGE]
    if len(rows) == 1:
        offsets = rows[0]
        entries = slice(offsets[0], offsets[-1])
        return Csr(offsets - offsets[0], senders[entries], weights[entries], kinds[entries])
    lengths = [np.diff(offsets) for offsets in rows]
    total = sum(lengths)
    offsets = np.zeros(len(total) + 1, np.int64)
    np.cumsum(total, out=offsets[1:])
    entries = np.empty(int(offsets[-1]), np.int64)  # for each merged entry, its place in the graph
    before = np.zeros(len(total), np.int64)
    for block, length in zip(rows, lengths, strict=True):
        entries[ragged_arange(offsets[:-1] + before, length)] = ragged_arange(block[:-1], length)
        before += length
    return Csr(offsets, senders[entries], weights[entries], kinds[entries])


def ragged_arange(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """`concat([arange(s, s + c) for s, c in zip(starts, counts)])`, vectorised: `[sum(counts)]` int64."""
    counts = np.asarray(counts, np.int64)
    total = int(counts.sum())
    first = np.cumsum(counts) - counts
    return np.repeat(np.asarray(starts, np.int64) - first, counts) + np.arange(total, dtype=np.int64)


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
