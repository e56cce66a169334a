"""Host-side neighbourhood sampling in native code (`graphrec_sample_uniform` in `graph_kernels.cc`).

Called by `graph.subgraphs.NeighborSampler` for its uniform method; not jittable (host numpy
in, host numpy out). ctypes releases the GIL for the call, so a producer thread samples while
the main thread dispatches steps.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence

import numpy as np

from graphrec_jax.kernels import native

_ARGTYPES = [
    ctypes.c_void_p,  # offsets int64 [num_nodes + 1]
    ctypes.c_void_p,  # neighbors int32 [nnz]
    ctypes.c_void_p,  # weights float32 [nnz]
    ctypes.c_void_p,  # kinds int8 [nnz]
    ctypes.c_int64,  # num_nodes
    ctypes.c_void_p,  # seeds int32 [m]
    ctypes.c_int64,  # m
    ctypes.c_void_p,  # fanouts int64 [hops]
    ctypes.c_int64,  # hops
    ctypes.c_uint64,  # the stream's seed
    ctypes.c_void_p,  # out: global_id int32
    ctypes.c_void_p,  # out: positions int32 [m]
    ctypes.c_void_p,  # out: receivers int32
    ctypes.c_void_p,  # out: senders int32
    ctypes.c_void_p,  # out: weights float32
    ctypes.c_void_p,  # out: kinds int8
    ctypes.c_void_p,  # out: sizes int64 [3]
]


@functools.cache
def _sampler(library: ctypes.CDLL):
    """The library's sampling function, its signature declared once."""
    function = library.graphrec_sample_uniform
    function.argtypes = _ARGTYPES
    function.restype = ctypes.c_int
    return function


def sample_uniform(
    offsets: np.ndarray,
    neighbors: np.ndarray,
    weights: np.ndarray,
    kinds: np.ndarray,
    seeds: np.ndarray,
    fanouts: Sequence[int],
    seed: int,
) -> tuple[np.ndarray, ...]:
    """The symmetric uniform subgraph of `seeds` (see `graph.subgraphs`), sampled natively.

    Args:
      offsets, neighbors, weights, kinds: the operator's CSR (int64, int32, float32, int8), its
        neighbours already checked to lie in `[0, len(offsets) - 1)`.
      seeds: `[m]` full-graph node indices.
      fanouts: 1 or 2 positive neighbours-per-node counts, seeds outwards.
      seed: the stream's seed (`uint64`): the same seed gives the same subgraph.

    Returns:
      (global_id `[n]` int32, number of distinct seeds, receivers, senders `[e]` int32,
      weights `[e]` float32, kinds `[e]` int8, positions `[m]` int32 of each seed).

    Raises:
      RuntimeError: the native library is unavailable (check `kernels.native_available` first).
      ValueError: a seed outside the graph.
    """
    library = native.load()
    if library is None:
        raise RuntimeError(f"native sampling is unavailable: {native.unavailable_reason()}")
    function = _sampler(library)
    num_nodes = len(offsets) - 1
    seeds = np.ascontiguousarray(seeds, np.int32)
    fanout_array = np.ascontiguousarray(fanouts, np.int64)
    m, first = len(seeds), int(fanout_array[0])
    second = int(fanout_array[1]) if len(fanout_array) == 2 else 0
    node_bound = m * (1 + 2 * first + first * second)
    edge_bound = m * (4 * first + 2 * first * second) if second else m * 2 * first
    global_id = np.empty(node_bound, np.int32)
    positions = np.empty(m, np.int32)
    receivers = np.empty(edge_bound, np.int32)
    senders = np.empty(edge_bound, np.int32)
    edge_weights = np.empty(edge_bound, np.float32)
    edge_kinds = np.empty(edge_bound, np.int8)
    sizes = np.zeros(3, np.int64)
    arrays = [np.ascontiguousarray(offsets, np.int64), np.ascontiguousarray(neighbors, np.int32)]
    arrays += [np.ascontiguousarray(weights, np.float32), np.ascontiguousarray(kinds, np.int8)]
    status = function(
        *(array.ctypes.data for array in arrays),
        num_nodes,
        seeds.ctypes.data,
        m,
        fanout_array.ctypes.data,
        len(fanout_array),
        int(seed) & (2**64 - 1),
        *(array.ctypes.data for array in (global_id, positions, receivers, senders, edge_weights, edge_kinds, sizes)),
    )
    if status != 0:
        raise ValueError(f"sampling seeds must be node indices in [0, {num_nodes}); got {seeds.min()}..{seeds.max()}")
    n0, nodes, edges = (int(size) for size in sizes)
    return (
        global_id[:nodes],
        n0,
        receivers[:edges],
        senders[:edges],
        edge_weights[:edges],
        edge_kinds[:edges],
        positions,
    )
