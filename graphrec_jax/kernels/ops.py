"""Graph propagation (CSR sparse x dense) and fused top-K scoring as jittable JAX ops.

Each op has two implementations with the same semantics: a native CPU kernel (an XLA FFI
call into `graph_kernels.cc`, see `native.py`) and a pure XLA one (gather/segment_sum,
dot/top_k) that runs on every platform. `backend="auto"` stages both with
`jax.lax.platform_dependent`, so the choice is made when the computation is lowered: a
function jitted once runs the native kernel on CPU and XLA's own ops on GPU/TPU, and a
non-CPU lowering never references the CPU-only FFI targets.

CSR conventions (shared by both backends): row `r` owns entries
`offsets[r]:offsets[r + 1]`; offsets start at >= 0, never decrease and end at most at
`len(neighbors)`. Entries before `offsets[0]` or after `offsets[-1]` belong to no row, so
index arrays may be padded to a static size. Index values are checked by the native kernels
(an out-of-range value raises at run time); the XLA path does not check them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from graphrec_jax.kernels.native import native_available, unavailable_reason

BACKENDS = ("auto", "native", "xla")


# ----------------------------------------------------------------------------------- checks


def _check_array(op: str, name: str, value, dtype, ndim: int, shape_text: str) -> jax.Array:
    array = jnp.asarray(value)
    if array.ndim != ndim or array.dtype != dtype:
        raise ValueError(
            f"{op}: {name} must be a {np.dtype(dtype).name} array of shape {shape_text}, "
            f"got {array.dtype} with shape {tuple(array.shape)}"
        )
    return array


def _check_csr(op: str, offsets, neighbors, weights, prefix: str = "") -> tuple[jax.Array, ...]:
    offsets = _check_array(op, prefix + "offsets", offsets, jnp.int32, 1, "[n_rows + 1]")
    neighbors = _check_array(op, prefix + "neighbors", neighbors, jnp.int32, 1, "[nnz]")
    weights = _check_array(op, prefix + "weights", weights, jnp.float32, 1, "[nnz]")
    if offsets.shape[0] < 1:
        raise ValueError(f"{op}: {prefix}offsets must hold n_rows + 1 >= 1 entries, got an empty array")
    if weights.shape != neighbors.shape:
        raise ValueError(
            f"{op}: {prefix}weights must have the shape of {prefix}neighbors {tuple(neighbors.shape)}, "
            f"got {tuple(weights.shape)}"
        )
    return offsets, neighbors, weights


def _check_backend(op: str, backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "native" and not native_available():
        raise RuntimeError(
            f"{op}: backend='native' but the native kernels are unavailable ({unavailable_reason()}); "
            "use backend='auto' or 'xla'"
        )


def _dispatch(backend: str, native_fn, xla_fn, *args):
    """Native kernel on CPU, XLA elsewhere; decided at lowering time (see module docstring)."""
    if backend == "xla" or (backend == "auto" and not native_available()):
        return xla_fn(*args)
    if backend == "native":  # no default branch: lowering for a non-CPU platform fails loudly
        return jax.lax.platform_dependent(*args, cpu=native_fn)
    return jax.lax.platform_dependent(*args, cpu=native_fn, default=xla_fn)


def _entry_rows(offsets: jax.Array, num_entries: int) -> jax.Array:
    """Row of every CSR entry, `[num_entries]` int32: -1 before `offsets[0]`, n_rows after the end.

    The row of entry j is (the number of offsets <= j) - 1, a scatter-add and a cumsum: O(nnz),
    unlike a searchsorted over all entries.
    """
    # The barrier keeps XLA from constant-folding this when the graph is a closed-over
    # constant: folding a million-entry cumsum takes XLA minutes, computing it milliseconds.
    offsets = jax.lax.optimization_barrier(offsets)
    marks = jnp.zeros(num_entries + 1, jnp.int32).at[offsets].add(1, mode="drop")
    return jnp.cumsum(marks[:num_entries]) - 1


# ------------------------------------------------------------------------------- csr_matmul


def _spmm_xla(offsets, neighbors, weights, x):
    n_rows = offsets.shape[0] - 1
    entry_rows = _entry_rows(offsets, neighbors.shape[0])
    contributions = weights[:, None] * x[neighbors]
    # Entries outside every row carry row id -1 or n_rows, which segment_sum drops.
    return jax.ops.segment_sum(contributions, entry_rows, num_segments=n_rows, indices_are_sorted=True)


def _spmm_native(offsets, neighbors, weights, x):
    out = jax.ShapeDtypeStruct((offsets.shape[0] - 1, x.shape[1]), jnp.float32)
    call = jax.ffi.ffi_call("graphrec_csr_matmul", out, vmap_method="sequential")
    return call(offsets, neighbors, weights, x)


def _spmm(backend, offsets, neighbors, weights, x):
    return _dispatch(backend, _spmm_native, _spmm_xla, offsets, neighbors, weights, x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _csr_matmul(backend, offsets, neighbors, weights, transpose, x):
    return _spmm(backend, offsets, neighbors, weights, x)


def _csr_matmul_forward(backend, offsets, neighbors, weights, transpose, x):
    if transpose is None and offsets.shape[0] - 1 != x.shape[0]:
        raise ValueError(
            f"csr_matmul: the gradient needs A.T; transpose=None means A is symmetric, but A is "
            f"[{offsets.shape[0] - 1}, {x.shape[0]}]: pass transpose=(t_offsets, t_neighbors, t_weights)"
        )
    return _spmm(backend, offsets, neighbors, weights, x), (offsets, neighbors, weights, transpose)


def _csr_matmul_backward(backend, residuals, y_bar):
    offsets, neighbors, weights, transpose = residuals
    if transpose is None:
        x_bar = _spmm(backend, offsets, neighbors, weights, y_bar)
        return None, None, None, None, x_bar
    x_bar = _spmm(backend, *transpose, y_bar)
    return None, None, None, (None, None, None), x_bar


_csr_matmul.defvjp(_csr_matmul_forward, _csr_matmul_backward)


def csr_matmul(
    offsets: jax.Array,
    neighbors: jax.Array,
    weights: jax.Array,
    x: jax.Array,
    *,
    transpose: tuple[jax.Array, jax.Array, jax.Array] | None = None,
    backend: str = "auto",
) -> jax.Array:
    """Sparse (CSR) matrix times dense matrix: `y = A @ x`.

    `y[r] = sum_{j in offsets[r]:offsets[r+1]} weights[j] * x[neighbors[j]]`.

    Args:
      offsets: int32 `[n_rows + 1]`, row `r` owns entries `offsets[r]:offsets[r + 1]`.
      neighbors: int32 `[nnz]`, column of each entry, in `[0, n_cols)`.
      weights: float32 `[nnz]`, value of each entry.
      x: float32 `[n_cols, d]`; any d (d = 32, 64, 128 have specialised native kernels).
      transpose: the CSR arrays `(t_offsets [n_cols + 1], t_neighbors [nnz], t_weights [nnz])`
        of `A.T`, used only for the gradient. None means A is symmetric (the normalised
        adjacency of an undirected graph) and the same arrays serve.
      backend: "auto" (native kernel on CPU when available, XLA elsewhere), "native", "xla".

    Returns:
      float32 `[n_rows, d]`.

    Differentiable w.r.t. `x` only: the cotangent is `A.T @ y_bar`, another csr_matmul over
    `transpose`. The structure and `weights` get no gradient (zero). Jittable.
    """
    op = "csr_matmul"
    _check_backend(op, backend)
    offsets, neighbors, weights = _check_csr(op, offsets, neighbors, weights)
    x = _check_array(op, "x", x, jnp.float32, 2, "[n_cols, d]")
    if transpose is not None:
        if len(transpose) != 3:
            raise ValueError(f"{op}: transpose must be (t_offsets, t_neighbors, t_weights), got {transpose!r}")
        t_offsets, t_neighbors, t_weights = _check_csr(op, *transpose, prefix="transpose ")
        if t_offsets.shape[0] != x.shape[0] + 1:
            raise ValueError(
                f"{op}: transpose offsets must have n_cols + 1 = {x.shape[0] + 1} entries (x is "
                f"{tuple(x.shape)}), got {t_offsets.shape[0]}"
            )
        transpose = (t_offsets, t_neighbors, t_weights)
    return _csr_matmul(backend, offsets, neighbors, weights, transpose, x)


# -------------------------------------------------------------------------- csr_matmul_rows


def _rows_xla(offsets, neighbors, weights, x, rows):
    # XLA has no cheap variable-length gather of whole rows; on GPU/TPU the full product is fast.
    return _spmm_xla(offsets, neighbors, weights, x)[rows]


def _rows_native(offsets, neighbors, weights, x, rows):
    out = jax.ShapeDtypeStruct((rows.shape[0], x.shape[1]), jnp.float32)
    call = jax.ffi.ffi_call("graphrec_csr_matmul_rows", out, vmap_method="sequential")
    return call(offsets, neighbors, weights, x, rows)


def _scatter_rows_xla(n_cols, offsets, neighbors, weights, rows, y_bar):
    n_rows = offsets.shape[0] - 1
    # One extra zero row receives the entries that belong to no row.
    row_bar = jnp.zeros((n_rows + 1, y_bar.shape[1]), jnp.float32).at[rows].add(y_bar)
    entry_rows = _entry_rows(offsets, neighbors.shape[0])
    entry_rows = jnp.where((entry_rows >= 0) & (entry_rows < n_rows), entry_rows, n_rows)
    contributions = weights[:, None] * row_bar[entry_rows]
    return jax.ops.segment_sum(contributions, neighbors, num_segments=n_cols)


def _scatter_rows_native(n_cols, offsets, neighbors, weights, rows, y_bar):
    out = jax.ShapeDtypeStruct((n_cols, y_bar.shape[1]), jnp.float32)
    call = jax.ffi.ffi_call("graphrec_csr_scatter_rows", out, vmap_method="sequential")
    return call(offsets, neighbors, weights, rows, y_bar)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _csr_matmul_rows(backend, n_cols, offsets, neighbors, weights, x, rows):
    return _dispatch(backend, _rows_native, _rows_xla, offsets, neighbors, weights, x, rows)


def _csr_matmul_rows_forward(backend, n_cols, offsets, neighbors, weights, x, rows):
    y = _csr_matmul_rows(backend, n_cols, offsets, neighbors, weights, x, rows)
    return y, (offsets, neighbors, weights, rows)


def _csr_matmul_rows_backward(backend, n_cols, residuals, y_bar):
    offsets, neighbors, weights, rows = residuals
    native = functools.partial(_scatter_rows_native, n_cols)
    xla = functools.partial(_scatter_rows_xla, n_cols)
    x_bar = _dispatch(backend, native, xla, offsets, neighbors, weights, rows, y_bar)
    return None, None, None, x_bar, None


_csr_matmul_rows.defvjp(_csr_matmul_rows_forward, _csr_matmul_rows_backward)


def csr_matmul_rows(
    offsets: jax.Array,
    neighbors: jax.Array,
    weights: jax.Array,
    x: jax.Array,
    rows: jax.Array,
    *,
    backend: str = "auto",
) -> jax.Array:
    """Selected rows of a CSR product: `(A @ x)[rows]`, computing only those rows on CPU.

    Args:
      offsets, neighbors, weights: the CSR arrays of A, as in `csr_matmul`.
      x: float32 `[n_cols, d]`.
      rows: int32 `[r]`, rows of A to compute, in `[0, n_rows)`; may repeat.
      backend: "auto", "native" or "xla" (the XLA path computes all of `A @ x` and gathers).

    Returns:
      float32 `[r, d]`.

    Differentiable w.r.t. `x` only: the cotangent scatters `weights[j] * y_bar[i]` into
    `x_bar[neighbors[j]]` for every entry j of row `rows[i]`, `[n_cols, d]` (repeated rows
    add up). No gradient for the structure or `weights`. Jittable.
    """
    op = "csr_matmul_rows"
    _check_backend(op, backend)
    offsets, neighbors, weights = _check_csr(op, offsets, neighbors, weights)
    x = _check_array(op, "x", x, jnp.float32, 2, "[n_cols, d]")
    rows = _check_array(op, "rows", rows, jnp.int32, 1, "[r]")
    return _csr_matmul_rows(backend, x.shape[0], offsets, neighbors, weights, x, rows)


# -------------------------------------------------------------------------------- take_rows


def _identity_csr(indices: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(offsets `[m + 1]`, weights `[m]`): row i of the CSR holds entry i alone, weight 1."""
    m = indices.shape[0]
    return jnp.arange(m + 1, dtype=jnp.int32), jnp.ones((m,), jnp.float32)


def _take_native(x, indices):
    offsets, weights = _identity_csr(indices)
    return _spmm_native(offsets, indices, weights, x)


def _take_xla(x, indices):
    return x[indices]


def _take_scatter_native(n, indices, y_bar):
    offsets, weights = _identity_csr(indices)
    return _scatter_rows_native(n, offsets, indices, weights, offsets[:-1], y_bar)


def _take_scatter_xla(n, indices, y_bar):
    return jnp.zeros((n, y_bar.shape[1]), y_bar.dtype).at[indices].add(y_bar)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _take_rows(backend, n, x, indices):
    return _dispatch(backend, _take_native, _take_xla, x, indices)


def _take_rows_forward(backend, n, x, indices):
    return _take_rows(backend, n, x, indices), indices


def _take_rows_backward(backend, n, indices, y_bar):
    native = functools.partial(_take_scatter_native, n)
    xla = functools.partial(_take_scatter_xla, n)
    return _dispatch(backend, native, xla, indices, y_bar), None


_take_rows.defvjp(_take_rows_forward, _take_rows_backward)


def take_rows(x: jax.Array, indices: jax.Array, *, backend: str = "auto") -> jax.Array:
    """`x[indices]`: rows of a table, `x [n, d], indices [m] -> [m, d]`.

    XLA's CPU gather and its scatter-add gradient run on one thread at about 2 GB/s; the
    native path is the `csr_matmul` kernel over a one-entry-per-row CSR (parallel, with
    prefetching) and its gradient `csr_matmul_rows`' deterministic scatter. Sampled training
    gathers every subgraph node's layer-0 row this way.

    Args:
      x: float32 `[n, d]`.
      indices: int32 `[m]` in `[0, n)` (checked by the native kernel; may repeat).
      backend: "auto", "native" or "xla".

    Returns:
      float32 `[m, d]`. Differentiable w.r.t. `x` (repeated indices add up). Jittable.
    """
    op = "take_rows"
    _check_backend(op, backend)
    x = _check_array(op, "x", x, jnp.float32, 2, "[n, d]")
    indices = _check_array(op, "indices", indices, jnp.int32, 1, "[m]")
    return _take_rows(backend, x.shape[0], x, indices)


# ----------------------------------------------------------------------------- top_k_scores


def _top_k_xla(k, queries, items, item_bias, exclude_offsets, exclude_items):
    b, n = queries.shape[0], items.shape[0]
    # HIGHEST: TPUs and recent GPUs would otherwise round the inputs to bf16/tf32.
    scores = jnp.dot(queries, items.T, precision=jax.lax.Precision.HIGHEST) + item_bias[None, :]
    if exclude_items.shape[0] > 0:
        rows = _entry_rows(exclude_offsets, exclude_items.shape[0])
        valid = (rows >= 0) & (rows < b) & (exclude_items >= 0) & (exclude_items < n)
        # Invalid pairs are sent to row b, out of bounds, and dropped.
        scores = scores.at[jnp.where(valid, rows, b), jnp.where(valid, exclude_items, 0)].set(-jnp.inf, mode="drop")
    selected = min(k, n)
    if selected > 0:
        top_scores, top_indices = jax.lax.top_k(scores, selected)  # ties: lower index first
    else:
        top_scores, top_indices = jnp.zeros((b, 0), jnp.float32), jnp.zeros((b, 0), jnp.int32)
    top_indices = jnp.where(top_scores == -jnp.inf, -1, top_indices).astype(jnp.int32)
    padding = ((0, 0), (0, k - selected))
    return (
        jnp.pad(top_scores, padding, constant_values=-jnp.inf),
        jnp.pad(top_indices, padding, constant_values=-1),
    )


def _top_k_native(k, queries, items, item_bias, exclude_offsets, exclude_items):
    b = queries.shape[0]
    out = (jax.ShapeDtypeStruct((b, k), jnp.float32), jax.ShapeDtypeStruct((b, k), jnp.int32))
    call = jax.ffi.ffi_call("graphrec_top_k_scores", out, vmap_method="sequential")
    scores, indices = call(queries, items, item_bias, exclude_offsets, exclude_items, k=np.int64(k))
    return scores, indices


def top_k_scores(
    queries: jax.Array,
    items: jax.Array,
    k: int,
    *,
    exclude_offsets: jax.Array | None = None,
    exclude_items: jax.Array | None = None,
    item_bias: jax.Array | None = None,
    backend: str = "auto",
) -> tuple[jax.Array, jax.Array]:
    """Exact top-k items per query by dot product, with per-query exclusions.

    `score[q, i] = queries[q] . items[i] + item_bias[i]`, with `-inf` for each excluded pair.
    The native CPU kernel fuses scoring and selection and never builds the `[b, n]` matrix.

    Args:
      queries: float32 `[b, d]`.
      items: float32 `[n, d]`.
      k: static positive int; may exceed n.
      exclude_offsets: int32 `[b + 1]`, CSR offsets into `exclude_items` (entries past
        `exclude_offsets[b]` are ignored, so the list may be padded).
      exclude_items: int32 `[m]`, items excluded per query (e.g. training items already seen);
        any order, values outside `[0, n)` are ignored.
      item_bias: float32 `[n]` or None, added to every score; `-inf` removes an item from the
        ranking (how candidate sets are expressed).
      backend: "auto" (native kernel on CPU when available, XLA elsewhere), "native", "xla".

    Returns:
      `(scores, indices)`: float32 `[b, k]` descending and int32 `[b, k]`. Ties rank the lower
      item index first. Slots beyond a row's finite scores hold score `-inf` and index -1.
      NaN scores are never selected by the native kernel; avoid them.

    Not differentiable. Jittable (`k` static).
    """
    op = "top_k_scores"
    _check_backend(op, backend)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"{op}: k must be a positive Python int, got {k!r}")
    k = int(k)
    queries = _check_array(op, "queries", queries, jnp.float32, 2, "[b, d]")
    b, d = queries.shape
    items = _check_array(op, "items", items, jnp.float32, 2, f"[n, {d}]")
    if items.shape[1] != d:
        raise ValueError(f"{op}: items must be [n, {d}] to match queries {tuple(queries.shape)}, got {items.shape}")
    n = items.shape[0]
    if item_bias is None:
        item_bias = jnp.zeros((n,), jnp.float32)
    item_bias = _check_array(op, "item_bias", item_bias, jnp.float32, 1, f"[{n}]")
    if item_bias.shape[0] != n:
        raise ValueError(f"{op}: item_bias must be float32 [{n}] (one per item), got {item_bias.shape}")
    if (exclude_offsets is None) != (exclude_items is None):
        raise ValueError(f"{op}: pass exclude_offsets and exclude_items together, or neither")
    if exclude_offsets is None:
        exclude_offsets = jnp.zeros((b + 1,), jnp.int32)
        exclude_items = jnp.zeros((0,), jnp.int32)
    exclude_offsets = _check_array(op, "exclude_offsets", exclude_offsets, jnp.int32, 1, f"[{b + 1}]")
    exclude_items = _check_array(op, "exclude_items", exclude_items, jnp.int32, 1, "[m]")
    if exclude_offsets.shape[0] != b + 1:
        raise ValueError(
            f"{op}: exclude_offsets must be int32 [b + 1] = [{b + 1}] for {b} queries, got {exclude_offsets.shape}"
        )
    native = functools.partial(_top_k_native, k)
    xla = functools.partial(_top_k_xla, k)
    scores, indices = _dispatch(backend, native, xla, queries, items, item_bias, exclude_offsets, exclude_items)
    return jax.lax.stop_gradient(scores), indices
