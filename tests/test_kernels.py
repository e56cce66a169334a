"""Tests for graphrec_jax.kernels: native CPU kernels and XLA fallbacks against dense numpy."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphrec_jax.kernels import (
    csr_matmul,
    csr_matmul_rows,
    native_available,
    take_rows,
    top_k_scores,
    unavailable_reason,
)
from graphrec_jax.kernels.native import library_path, unsafe_reason, verified

NATIVE = native_available()
needs_native = pytest.mark.skipif(not NATIVE, reason=f"native kernels unavailable: {unavailable_reason()}")
BACKENDS = [pytest.param("native", marks=needs_native), "xla"]
TARGET_PREFIX = "graphrec_"


def random_csr(rng, n_rows, n_cols, density=0.3, empty_rows=(), dyadic=False):
    """CSR arrays of a random matrix with some empty rows, and the dense matrix."""
    dense = (rng.random((n_rows, n_cols)) < density) * rng.uniform(0.1, 2.0, (n_rows, n_cols))
    if dyadic:  # exactly representable products and sums: backends must agree bit for bit
        dense = np.round(dense * 4) / 4
    dense[list(empty_rows)] = 0.0
    dense = dense.astype(np.float32)
    rows, cols = np.nonzero(dense)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))]).astype(np.int32)
    return offsets, cols.astype(np.int32), dense[rows, cols], dense


def symmetric_csr(rng, n, density=0.2):
    upper = np.triu((rng.random((n, n)) < density) * rng.uniform(0.1, 1.0, (n, n)), 1)
    dense = (upper + upper.T).astype(np.float32)
    dense[3] = 0.0
    dense[:, 3] = 0.0  # an isolated node: an empty row and column
    rows, cols = np.nonzero(dense)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int32)
    return offsets, cols.astype(np.int32), dense[rows, cols], dense


def reference_top_k(scores, k):
    """Exact top-k with the documented conventions: ties by lower index, -inf -> index -1."""
    b, n = scores.shape
    out_scores = np.full((b, k), -np.inf, np.float32)
    out_indices = np.full((b, k), -1, np.int32)
    for row in range(b):
        order = np.lexsort((np.arange(n), -scores[row]))[:k]
        order = order[scores[row, order] > -np.inf]
        out_scores[row, : len(order)] = scores[row, order]
        out_indices[row, : len(order)] = order
    return out_scores, out_indices


# --------------------------------------------------------------------------------- csr_matmul


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [64, 7])
def test_csr_matmul_matches_dense(backend, d):
    rng = np.random.default_rng(0)
    offsets, neighbors, weights, dense = random_csr(rng, 37, 23, empty_rows=(0, 5, 36))
    x = rng.standard_normal((23, d)).astype(np.float32)
    y = jax.jit(lambda x: csr_matmul(offsets, neighbors, weights, x, backend=backend))(x)
    assert y.shape == (37, d) and y.dtype == jnp.float32
    np.testing.assert_allclose(y, dense @ x, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(y)[[0, 5, 36]] == 0.0)


@needs_native
@pytest.mark.parametrize("d", [64, 32, 128, 3])
def test_csr_matmul_native_equals_xla_on_exact_data(d):
    rng = np.random.default_rng(1)
    offsets, neighbors, weights, _ = random_csr(rng, 50, 40, empty_rows=(7,), dyadic=True)
    x = np.round(rng.standard_normal((40, d)) * 8).astype(np.float32) / 8
    native = csr_matmul(offsets, neighbors, weights, x, backend="native")
    xla = csr_matmul(offsets, neighbors, weights, x, backend="xla")
    np.testing.assert_array_equal(native, xla)


@pytest.mark.parametrize("backend", BACKENDS)
def test_csr_matmul_ignores_entries_outside_rows(backend):
    """Index arrays padded past offsets[-1] (any values) leave the product unchanged."""
    rng = np.random.default_rng(2)
    offsets, neighbors, weights, dense = random_csr(rng, 10, 8)
    padded_neighbors = np.concatenate([neighbors, [0, 7, 3]]).astype(np.int32)
    padded_weights = np.concatenate([weights, [5.0, 5.0, 5.0]]).astype(np.float32)
    x = rng.standard_normal((8, 64)).astype(np.float32)
    y = csr_matmul(offsets, padded_neighbors, padded_weights, x, backend=backend)
    np.testing.assert_allclose(y, dense @ x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_csr_matmul_gradient_symmetric(backend):
    rng = np.random.default_rng(3)
    offsets, neighbors, weights, dense = symmetric_csr(rng, 30)
    x = rng.standard_normal((30, 64)).astype(np.float32)
    g = rng.standard_normal((30, 64)).astype(np.float32)
    loss = lambda x: jnp.sum(csr_matmul(offsets, neighbors, weights, x, backend=backend) * g)
    np.testing.assert_allclose(jax.jit(jax.grad(loss))(x), dense.T @ g, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_csr_matmul_gradient_uses_transpose(backend):
    rng = np.random.default_rng(4)
    offsets, neighbors, weights, dense = random_csr(rng, 12, 20, empty_rows=(2,))
    transpose = random_csr_from_dense(dense.T)
    x = rng.standard_normal((20, 9)).astype(np.float32)
    g = rng.standard_normal((12, 9)).astype(np.float32)

    def loss(x):
        y = csr_matmul(offsets, neighbors, weights, x, transpose=transpose, backend=backend)
        return jnp.sum(y * g)

    x_bar = jax.jit(jax.grad(loss))(x)
    assert x_bar.shape == (20, 9)
    np.testing.assert_allclose(x_bar, dense.T @ g, rtol=1e-5, atol=1e-5)


def random_csr_from_dense(dense):
    rows, cols = np.nonzero(dense)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=dense.shape[0]))])
    return offsets.astype(np.int32), cols.astype(np.int32), dense[rows, cols].astype(np.float32)


def test_csr_matmul_gradient_of_rectangular_matrix_needs_transpose():
    rng = np.random.default_rng(5)
    offsets, neighbors, weights, _ = random_csr(rng, 6, 9)
    x = rng.standard_normal((9, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="transpose"):
        jax.grad(lambda x: jnp.sum(csr_matmul(offsets, neighbors, weights, x)))(x)


def test_csr_matmul_validates_shapes_and_dtypes():
    offsets = np.array([0, 1, 2], np.int32)
    neighbors = np.array([0, 1], np.int32)
    weights = np.ones(2, np.float32)
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="weights must be a float32"):
        csr_matmul(offsets, neighbors, weights.astype(np.int32), x)
    with pytest.raises(ValueError, match="x must be a float32 array of shape"):
        csr_matmul(offsets, neighbors, weights, x[0])
    with pytest.raises(ValueError, match="shape of neighbors"):
        csr_matmul(offsets, neighbors, weights[:1], x)
    with pytest.raises(ValueError, match="transpose offsets must have n_cols"):
        csr_matmul(offsets, neighbors, weights, x, transpose=(offsets[:2], neighbors, weights))
    with pytest.raises(ValueError, match="backend must be one of"):
        csr_matmul(offsets, neighbors, weights, x, backend="gpu")


@needs_native
def test_native_kernels_reject_out_of_range_indices():
    offsets = np.array([0, 1, 2], np.int32)
    weights = np.ones(2, np.float32)
    x = np.ones((2, 4), np.float32)
    with pytest.raises(jax.errors.JaxRuntimeError, match="neighbors holds a column index outside"):
        jax.block_until_ready(csr_matmul(offsets, np.array([0, 2], np.int32), weights, x, backend="native"))
    with pytest.raises(jax.errors.JaxRuntimeError, match="offsets decreases"):
        bad_offsets = np.array([0, 2, 1], np.int32)
        jax.block_until_ready(csr_matmul(bad_offsets, np.array([0, 1], np.int32), weights, x, backend="native"))
    with pytest.raises(jax.errors.JaxRuntimeError, match="only 2 entries"):
        bad_offsets = np.array([0, 1, 3], np.int32)
        jax.block_until_ready(csr_matmul(bad_offsets, np.array([0, 1], np.int32), weights, x, backend="native"))
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"rows\[1\] = 2 is outside"):
        rows = np.array([0, 2], np.int32)
        jax.block_until_ready(csr_matmul_rows(offsets, np.array([0, 1], np.int32), weights, x, rows, backend="native"))


# ---------------------------------------------------------------------------- csr_matmul_rows


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [64, 5])
def test_csr_matmul_rows_forward_and_gradient(backend, d):
    rng = np.random.default_rng(6)
    offsets, neighbors, weights, dense = random_csr(rng, 40, 25, empty_rows=(4,))
    rows = np.array([4, 0, 39, 0, 17, 4, 0], np.int32)  # repeats and an empty row
    x = rng.standard_normal((25, d)).astype(np.float32)
    g = rng.standard_normal((len(rows), d)).astype(np.float32)

    forward = jax.jit(lambda x: csr_matmul_rows(offsets, neighbors, weights, x, rows, backend=backend))
    np.testing.assert_allclose(forward(x), dense[rows] @ x, rtol=1e-5, atol=1e-5)

    loss = lambda x: jnp.sum(csr_matmul_rows(offsets, neighbors, weights, x, rows, backend=backend) * g)
    np.testing.assert_allclose(jax.jit(jax.grad(loss))(x), dense[rows].T @ g, rtol=1e-5, atol=1e-5)


@needs_native
def test_csr_matmul_rows_native_equals_xla_on_exact_data():
    rng = np.random.default_rng(7)
    offsets, neighbors, weights, _ = random_csr(rng, 300, 200, density=0.05, dyadic=True)
    rows = rng.integers(0, 300, 64).astype(np.int32)
    x = np.round(rng.standard_normal((200, 64)) * 8).astype(np.float32) / 8
    g = np.round(rng.standard_normal((64, 64)) * 8).astype(np.float32) / 8

    def grad(backend):
        loss = lambda x: jnp.sum(csr_matmul_rows(offsets, neighbors, weights, x, rows, backend=backend) * g)
        return jax.jit(jax.grad(loss))(x)

    forward = jax.jit(csr_matmul_rows, static_argnames="backend")
    np.testing.assert_array_equal(
        forward(offsets, neighbors, weights, x, rows, backend="native"),
        forward(offsets, neighbors, weights, x, rows, backend="xla"),
    )
    np.testing.assert_array_equal(grad("native"), grad("xla"))


# ---------------------------------------------------------------------------------- take_rows


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [64, 5])
def test_take_rows_is_indexing_and_its_gradient_adds_repeats(backend, d):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((30, d)).astype(np.float32)
    indices = np.array([3, 0, 29, 3, 3, 17, 0], np.int32)
    g = rng.standard_normal((len(indices), d)).astype(np.float32)
    np.testing.assert_array_equal(jax.jit(lambda x: take_rows(x, indices, backend=backend))(x), x[indices])
    expected = np.zeros_like(x)
    np.add.at(expected, indices, g)
    loss = lambda x: jnp.sum(take_rows(x, indices, backend=backend) * g)
    np.testing.assert_allclose(jax.jit(jax.grad(loss))(x), expected, rtol=1e-6, atol=1e-6)


@needs_native
def test_take_rows_native_rejects_out_of_range_indices():
    with pytest.raises(jax.errors.JaxRuntimeError, match="column index outside"):
        jax.block_until_ready(take_rows(np.ones((3, 4), np.float32), np.array([0, 3], np.int32), backend="native"))
    with pytest.raises(ValueError, match="indices must be a int32 array"):
        take_rows(np.ones((3, 4), np.float32), np.array([0.0, 1.0], np.float32))


# ------------------------------------------------------------------------------- top_k_scores


def ranking_case(rng, b, n, d):
    """Small-integer embeddings: exact scores in both backends and many ties."""
    queries = rng.integers(-2, 3, (b, d)).astype(np.float32)
    items = rng.integers(-2, 3, (n, d)).astype(np.float32)
    bias = rng.integers(-3, 4, n).astype(np.float32)
    bias[rng.random(n) < 0.2] = -np.inf  # outside the candidate set
    lengths = rng.integers(0, 12, b)
    lengths[1] = 0
    exclude_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    exclude_items = rng.integers(-2, n + 2, exclude_offsets[-1]).astype(np.int32)  # some out of range
    scores = queries @ items.T + bias
    for row in range(b):
        excluded = exclude_items[exclude_offsets[row] : exclude_offsets[row + 1]]
        scores[row, excluded[(excluded >= 0) & (excluded < n)]] = -np.inf
    return queries, items, bias, exclude_offsets, exclude_items, scores


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("b", "n", "d", "k"), [(45, 203, 64, 20), (33, 31, 5, 8), (7, 9, 64, 15), (300, 2500, 64, 1), (70, 1500, 64, 30)]
)
def test_top_k_scores_matches_reference(backend, b, n, d, k):
    """Exclusions (unsorted, repeated, out of range), -inf biases, ties, rows short of k;
    the last case spans several query blocks and item tiles of the native kernel."""
    rng = np.random.default_rng(b * n + d)
    queries, items, bias, exclude_offsets, exclude_items, scores = ranking_case(rng, b, n, d)
    expected_scores, expected_indices = reference_top_k(scores, k)

    rank = jax.jit(
        lambda q, i, o, e, bias: top_k_scores(
            q, i, k, exclude_offsets=o, exclude_items=e, item_bias=bias, backend=backend
        )
    )
    got_scores, got_indices = rank(queries, items, exclude_offsets, exclude_items, bias)
    assert got_scores.shape == (b, k) and got_indices.dtype == jnp.int32
    np.testing.assert_array_equal(got_scores, expected_scores)
    np.testing.assert_array_equal(got_indices, expected_indices)
    if n < k:  # rows can never fill k slots
        assert np.all(np.asarray(got_indices)[:, n:] == -1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_top_k_scores_ties_rank_lower_index_first(backend):
    queries = np.ones((3, 4), np.float32)
    items = np.ones((50, 4), np.float32)  # every score ties
    items[[10, 40]] = 2.0
    scores, indices = top_k_scores(queries, items, 5, backend=backend)
    np.testing.assert_array_equal(indices, np.tile([10, 40, 0, 1, 2], (3, 1)))
    np.testing.assert_array_equal(scores, np.tile([8.0, 8.0, 4.0, 4.0, 4.0], (3, 1)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_top_k_scores_without_exclusions_or_bias_on_random_floats(backend):
    rng = np.random.default_rng(8)
    queries = rng.standard_normal((70, 64)).astype(np.float32)
    items = rng.standard_normal((500, 64)).astype(np.float32)
    scores, indices = top_k_scores(queries, items, 10, backend=backend)
    reference = queries.astype(np.float64) @ items.T.astype(np.float64)
    best = -np.sort(-reference, axis=1)[:, :10]
    # Rounding may swap two near-equal neighbours, so compare scores, not the index order.
    np.testing.assert_allclose(scores, best, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(reference, np.asarray(indices), 1), best, rtol=1e-4, atol=1e-4)
    assert all(len(set(row)) == 10 for row in np.asarray(indices).tolist())


@pytest.mark.parametrize("backend", BACKENDS)
def test_top_k_scores_ignores_padding_after_last_exclusion(backend):
    queries = np.eye(2, 3, dtype=np.float32)
    items = np.eye(3, dtype=np.float32)
    exclude_offsets = np.array([0, 1, 1], np.int32)
    exclude_items = np.array([0, 1, 1, 1], np.int32)  # entries 1.. are padding
    scores, indices = top_k_scores(
        queries, items, 2, exclude_offsets=exclude_offsets, exclude_items=exclude_items, backend=backend
    )
    np.testing.assert_array_equal(indices, [[1, 2], [1, 0]])
    np.testing.assert_array_equal(scores, [[0.0, 0.0], [1.0, 0.0]])


def _top_k_both_paths(queries, items, k, bias, exclude_offsets, exclude_items):
    """The native top-k with the bfloat16 screen on and off."""
    from graphrec_jax.kernels import native

    rank = jax.jit(
        lambda q, i, b, o, e: top_k_scores(q, i, k, exclude_offsets=o, exclude_items=e, item_bias=b, backend="native")
    )
    results = []
    try:
        for screening in (True, False):
            native.set_top_k_screening(screening)
            results.append(jax.tree.map(np.asarray, rank(queries, items, bias, exclude_offsets, exclude_items)))
    finally:
        native.set_top_k_screening(True)
    return results


@needs_native
@pytest.mark.parametrize("d", [1, 7, 32, 64, 100])
def test_top_k_screen_equals_the_fp32_path_bit_for_bit(d):
    """Norms spread over two orders of magnitude (as trained embeddings' are), duplicate items
    (exact ties), zero rows, -inf biases with and without finite ones (a finite bias widens the
    screen's early stop), exclusions: the same scores and items."""
    rng = np.random.default_rng(d)
    for case in range(4):
        b, n, k = int(rng.integers(32, 300)), int(rng.integers(1, 3000)), int(rng.integers(1, 60))
        queries = rng.standard_normal((b, d)) * rng.lognormal(0.0, 1.0, (b, 1))
        items = rng.standard_normal((n, d)) * rng.lognormal(0.0, 1.0, (n, 1))
        items[rng.integers(0, n, n // 10)] = items[rng.integers(0, n, n // 10)]
        items[rng.integers(0, n, 3)] = 0.0
        bias = np.where(rng.random(n) < 0.3, rng.normal(0.0, 0.5, n), 0.0) if case % 2 else np.zeros(n)
        bias[rng.random(n) < 0.1] = -np.inf
        lengths = rng.integers(0, 40, b)
        exclude_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        exclude_items = rng.integers(0, n, exclude_offsets[-1]).astype(np.int32)
        arrays = [x.astype(np.float32) for x in (queries, items, bias)]
        (screened_scores, screened_items), (scores, indices) = _top_k_both_paths(
            arrays[0], arrays[1], k, arrays[2], exclude_offsets, exclude_items
        )
        np.testing.assert_array_equal(screened_items, indices)
        np.testing.assert_array_equal(screened_scores, scores)


@needs_native
def test_top_k_screen_is_exact_where_bfloat16_rounding_reorders_scores():
    """Features spread within one bfloat16 step of 1, so rounding collapses the leaders' scores
    into a few values and reorders them; the exact pass must restore the fp32 order."""
    rng = np.random.default_rng(11)
    d, n, k = 4, 1500, 5
    near_one = lambda shape: 1.0 + rng.random(shape) * 2.0**-7  # noqa: E731
    queries = near_one((64, d))
    items = np.concatenate([near_one((50, d)), 0.9 * near_one((n - 50, d))])[rng.permutation(n)]
    arrays = [x.astype(np.float32) for x in (queries, items, np.zeros(n))]
    offsets = np.zeros(65, np.int32)
    (screened_scores, screened_items), (scores, indices) = _top_k_both_paths(
        *arrays[:2], k, arrays[2], offsets, np.zeros(1, np.int32)
    )
    np.testing.assert_array_equal(screened_items, indices)
    np.testing.assert_array_equal(screened_scores, scores)


@needs_native
@pytest.mark.parametrize("problem", ["nan item", "inf item", "huge query", "zero query", "nan bias", "inf bias"])
def test_top_k_screen_hands_unusual_inputs_to_the_fp32_path(problem):
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((64, 16)).astype(np.float32)
    items = rng.standard_normal((500, 16)).astype(np.float32)
    bias = np.zeros(500, np.float32)
    if problem == "nan item":
        items[7, 3] = np.nan
    elif problem == "inf item":
        items[7, 3] = np.inf
    elif problem == "huge query":
        queries[40] = 1e19
    elif problem == "zero query":  # every score ties
        queries[40] = 0.0
    elif problem == "nan bias":
        bias[7] = np.nan
    else:
        bias[7] = np.inf
    offsets = np.zeros(65, np.int32)
    (screened_scores, screened_items), (scores, indices) = _top_k_both_paths(
        queries, items, 10, bias, offsets, np.zeros(1, np.int32)
    )
    np.testing.assert_array_equal(screened_items, indices)
    np.testing.assert_array_equal(screened_scores, scores)


def test_top_k_scores_validates_arguments():
    queries = np.ones((2, 3), np.float32)
    items = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="k must be a positive"):
        top_k_scores(queries, items, 0)
    with pytest.raises(ValueError, match=r"items must be \[n, 3\]"):
        top_k_scores(queries, np.ones((4, 2), np.float32), 1)
    with pytest.raises(ValueError, match="item_bias must be float32"):
        top_k_scores(queries, items, 1, item_bias=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="together"):
        top_k_scores(queries, items, 1, exclude_offsets=np.zeros(3, np.int32))
    with pytest.raises(ValueError, match=r"exclude_offsets must be int32 \[b \+ 1\]"):
        top_k_scores(queries, items, 1, exclude_offsets=np.zeros(2, np.int32), exclude_items=np.zeros(0, np.int32))


# ---------------------------------------------------------------------------------- dispatch


def _graph_inputs():
    rng = np.random.default_rng(9)
    offsets, neighbors, weights, _ = symmetric_csr(rng, 16)
    return offsets, neighbors, weights, rng.standard_normal((16, 64)).astype(np.float32)


def _all_ops(offsets, neighbors, weights, x, backend="auto"):
    rows = jnp.arange(4, dtype=jnp.int32)

    def loss(x):
        y = csr_matmul(offsets, neighbors, weights, x, backend=backend)
        return jnp.sum(y**2) + jnp.sum(csr_matmul_rows(offsets, neighbors, weights, x, rows, backend=backend))

    scores, indices = top_k_scores(x, x, 3, backend=backend)
    value, x_bar = jax.value_and_grad(loss)(x)
    return value, x_bar, scores, indices


@needs_native
def test_auto_lowers_to_native_on_cpu_and_to_xla_elsewhere():
    args = _graph_inputs()
    traced = jax.jit(_all_ops).trace(*args)
    cpu_text = traced.lower().as_text()
    for target in ("graphrec_csr_matmul", "graphrec_csr_matmul_rows", "graphrec_csr_scatter_rows"):
        assert f'"{target}"' in cpu_text or f"@{target}" in cpu_text
    assert "graphrec_top_k_scores" in cpu_text
    for platform in ("cuda", "tpu"):
        text = traced.lower(lowering_platforms=(platform,)).as_text()
        assert TARGET_PREFIX not in text, f"{platform} lowering references a CPU-only FFI target"
    xla_text = jax.jit(lambda *a: _all_ops(*a, backend="xla")).lower(*args).as_text()
    assert TARGET_PREFIX not in xla_text


@needs_native
def test_native_and_xla_agree_through_vmap():
    offsets, neighbors, weights, x = _graph_inputs()
    batch = np.stack([x, 2 * x])
    for backend in ("native", "xla"):
        y = jax.vmap(lambda x, b=backend: csr_matmul(offsets, neighbors, weights, x, backend=b))(batch)
        np.testing.assert_allclose(y[1], 2 * y[0], rtol=1e-5, atol=1e-5)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=environment, timeout=300
    )


def test_env_switch_disables_native_path():
    result = _run_python(
        """
        import jax, numpy as np
        from graphrec_jax.kernels import csr_matmul, native_available
        assert not native_available()
        offsets = np.array([0, 1, 2], np.int32); neighbors = np.array([1, 0], np.int32)
        weights = np.array([2.0, 3.0], np.float32); x = np.arange(8, dtype=np.float32).reshape(2, 4)
        f = jax.jit(lambda x: csr_matmul(offsets, neighbors, weights, x))
        assert "graphrec_" not in f.lower(x).as_text()
        np.testing.assert_allclose(f(x), [[8, 10, 12, 14], [0, 3, 6, 9]])
        print("ok")
        """,
        GRAPHREC_NATIVE_KERNELS="0",
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_build_failure_warns_and_falls_back(tmp_path):
    result = _run_python(
        """
        import warnings, numpy as np
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            from graphrec_jax.kernels import csr_matmul, native_available, unavailable_reason
            assert not native_available()
            assert not native_available()  # warns once
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1 and "XLA" in messages[0], messages
        y = csr_matmul(np.array([0, 1], np.int32), np.array([0], np.int32), np.array([2.0], np.float32),
                       np.ones((1, 3), np.float32))
        np.testing.assert_allclose(y, [[2, 2, 2]])
        print(unavailable_reason())
        """,
        CXX="false",
        GRAPHREC_KERNEL_CACHE=str(tmp_path),
        GRAPHREC_NATIVE_KERNELS="1",
    )
    assert result.returncode == 0, result.stderr
    assert "false" in result.stdout


@needs_native
def test_pmap_over_two_cpu_devices():
    result = _run_python(
        """
        import jax, jax.numpy as jnp, numpy as np
        from graphrec_jax.kernels import csr_matmul, csr_matmul_rows, native_available, top_k_scores
        assert native_available() and jax.device_count() == 2
        rng = np.random.default_rng(0)
        upper = np.triu((rng.random((20, 20)) < 0.3) * rng.uniform(0.1, 1, (20, 20)), 1)
        dense = (upper + upper.T).astype(np.float32)
        rows, cols = np.nonzero(dense)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=20))]).astype(np.int32)
        neighbors, weights = cols.astype(np.int32), dense[rows, cols]
        picked = np.array([1, 5, 5, 19], np.int32)

        def step(x):
            loss = lambda x: jnp.sum(csr_matmul(offsets, neighbors, weights, x) ** 2)
            y = csr_matmul_rows(offsets, neighbors, weights, x, picked)
            scores, indices = top_k_scores(x, x, 4)
            return jax.lax.pmean(jax.grad(loss)(x), "d"), y, indices

        text = jax.pmap(step, axis_name="d").lower(np.zeros((2, 20, 64), np.float32)).as_text()
        assert "graphrec_csr_matmul" in text and "graphrec_top_k_scores" in text
        x = rng.standard_normal((2, 20, 64)).astype(np.float32)
        grads, y, indices = jax.pmap(step, axis_name="d")(x)
        expected = np.mean([2 * dense.T @ (dense @ x[i]) for i in range(2)], axis=0)
        np.testing.assert_allclose(grads[0], expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(grads[1], expected, rtol=1e-4, atol=1e-4)
        for i in range(2):
            np.testing.assert_allclose(y[i], dense[picked] @ x[i], rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(indices[i], np.argsort(-(x[i] @ x[i].T), axis=1, kind="stable")[:, :4])
        print("ok")
        """,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        GRAPHREC_NUM_THREADS="2",
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


# ------------------------------------------------------------------------------ kernel cache

EVIL_LIBRARY = r"""
#include <cstdio>
#include <cstdlib>
__attribute__((constructor)) static void planted() {
  if (const char* marker = std::getenv("GRAPHREC_TEST_MARKER")) {
    if (FILE* file = std::fopen(marker, "w")) { std::fputs("planted library ran", file); std::fclose(file); }
  }
}
"""


def _planted_library(folder) -> bytes:
    """A shared library whose constructor writes the file named by $GRAPHREC_TEST_MARKER."""
    source = folder / "planted.cc"
    source.write_text(EVIL_LIBRARY)
    output = folder / "planted.so"
    subprocess.run(["g++", "-shared", "-fPIC", str(source), "-o", str(output)], check=True, capture_output=True)
    return output.read_bytes()


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CHECK_CACHE = """
    import json, warnings, numpy as np
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        from graphrec_jax.kernels import csr_matmul, native, native_available, unavailable_reason
        available = native_available()
        native_available()  # warns once at most
    y = csr_matmul(np.array([0, 1, 2], np.int32), np.array([1, 0], np.int32), np.array([2.0, 3.0], np.float32),
                   np.arange(8, dtype=np.float32).reshape(2, 4), backend="native" if available else "xla")
    np.testing.assert_allclose(y, [[8, 10, 12, 14], [0, 3, 6, 9]])
    warned = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    print(json.dumps({"available": available, "warnings": warned, "reason": unavailable_reason(),
                      "library": str(native.library_path())}))
"""


def _check_cache(cache, **env) -> dict:
    result = _run_python(CHECK_CACHE, GRAPHREC_KERNEL_CACHE=str(cache), GRAPHREC_NATIVE_KERNELS="1", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_unsafe_reason_names_owner_and_mode(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert unsafe_reason(private) == ""
    private.chmod(0o755)  # readable by others is fine: nobody else can replace a file
    assert unsafe_reason(private) == ""
    for mode in (0o770, 0o703, 0o777):
        private.chmod(mode)
        assert unsafe_reason(private) == f"is writable by group or others (mode {mode:#o})"
    private.chmod(0o700)
    someone_else = os.getuid() + 1
    assert unsafe_reason(private, uid=someone_else) == (
        f"is owned by uid {os.getuid()}, not by this user (uid {someone_else})"
    )
    assert unsafe_reason(tmp_path / "missing").startswith("cannot be inspected")


@needs_native
def test_cache_builds_privately_records_sha256_and_rebuilds_a_changed_library(tmp_path):
    cache = tmp_path / "kernels"
    outcome = _check_cache(cache)
    assert outcome["available"] and outcome["warnings"] == [], outcome
    library = Path(outcome["library"])
    record = library.with_name(library.name + ".sha256")
    assert library.parent == cache and oct(cache.stat().st_mode & 0o777) == "0o700"
    assert record.read_text().strip() == _sha256(library)
    assert not list(cache.glob("*.tmp"))

    # Same user, bytes changed after the build: the planted library must not run, but be rebuilt.
    marker = tmp_path / "marker"
    library.write_bytes(_planted_library(tmp_path))
    outcome = _check_cache(cache, GRAPHREC_TEST_MARKER=str(marker))
    assert outcome["available"] and outcome["warnings"] == [], outcome
    assert not marker.exists(), "the changed library was loaded"
    assert record.read_text().strip() == _sha256(library)

    assert verified(library)
    record.unlink()  # a library built before records existed is not trusted either
    assert not verified(library)


@needs_native
@pytest.mark.parametrize("problem", ["group_writable", "foreign_owner"])
def test_unsafe_cache_is_refused_with_a_warning_naming_it(tmp_path, problem):
    cache = tmp_path / "shared"
    cache.mkdir()
    if problem == "group_writable":
        cache.chmod(0o777)
        expected = "is writable by group or others (mode 0o777)"
    else:
        cache.chmod(0o700)
        expected = f"is owned by uid {os.getuid()}, not by this user (uid {os.getuid() + 1})"
    # Someone who can write there planted a library, and a record to match, under the expected name.
    planted = library_path(cache)
    planted.write_bytes(_planted_library(tmp_path))
    planted.with_name(planted.name + ".sha256").write_text(_sha256(planted) + "\n")
    marker = tmp_path / "marker"
    code = CHECK_CACHE
    if problem == "foreign_owner":  # this process plays another user: the directory is not its own
        code = f"import os; os.getuid = lambda: {os.getuid() + 1}\n" + textwrap.dedent(CHECK_CACHE)
    result = _run_python(
        code, GRAPHREC_KERNEL_CACHE=str(cache), GRAPHREC_NATIVE_KERNELS="1", GRAPHREC_TEST_MARKER=str(marker)
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert not outcome["available"]
    assert len(outcome["warnings"]) == 1, outcome
    assert f"kernel cache {cache} {expected}" in outcome["warnings"][0]
    assert "XLA" in outcome["warnings"][0] and "GRAPHREC_KERNEL_CACHE" in outcome["warnings"][0]
    assert not marker.exists(), "a library in an unsafe cache was loaded"
    assert sorted(path.name for path in cache.iterdir()) == sorted([planted.name, planted.name + ".sha256"])
