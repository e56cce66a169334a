"""Graph layers as pure functions over `jraph.GraphsTuple`: normalised aggregation,
LightGCN propagation, and the GCN layer of the original design.

Aggregation computes `y[r] = sum_{edges s->r} weight * x[s]`, that is `A_hat @ x` for the
symmetric normalised adjacency built by `graph.build.build_interaction_graph`. The `backend`
argument is one of `kernels.BACKENDS`: "xla" (XLA's segment sum, what GPUs and TPUs run),
"native" (a CSR kernel on CPU, where XLA's scatter is far from the memory floor) or "auto"
(native on CPU when available, XLA elsewhere); all give the same numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from graphrec_jax import kernels
from graphrec_jax.graph.build import SOCIAL_EDGE, SOCIAL_REVERSE_EDGE, csr_offsets, edge_kinds

# (graph, x [n_node, d]) -> [n_node, d]
Aggregate = Callable[[jraph.GraphsTuple, jax.Array], jax.Array]


def _kinds(graph: jraph.GraphsTuple, kinds: Sequence[int] | None) -> list[int]:
    """The propagating blocks of `graph` among `kinds` (None: all of them)."""
    present = [kind for kind in edge_kinds(graph) if kind != SOCIAL_REVERSE_EDGE]
    return present if kinds is None else [kind for kind in present if kind in kinds]


def aggregate(
    graph: jraph.GraphsTuple, x: jax.Array, *, kinds: Sequence[int] | None = None, backend: str = "auto"
) -> jax.Array:
    """Normalised neighbour sum `A_hat @ x`: `[n_node, d] -> [n_node, d]`, summed over the edge
    blocks of `kinds` (None: every block: interactions, social and item-item links).

    A block of undirected edges is symmetric, so its backward pass reuses it; directed social
    links propagate their gradient through their stored transpose block.
    """
    total = None
    for kind in _kinds(graph, kinds):
        transpose = None
        if kind == SOCIAL_EDGE and SOCIAL_REVERSE_EDGE in edge_kinds(graph):
            transpose = (csr_offsets(graph, SOCIAL_REVERSE_EDGE), graph.senders, graph.edges["weight"])
        product = kernels.csr_matmul(
            csr_offsets(graph, kind), graph.senders, graph.edges["weight"], x, transpose=transpose, backend=backend
        )
        total = product if total is None else total + product
    return jnp.zeros_like(x) if total is None else total


def aggregate_users(graph: jraph.GraphsTuple, users: jax.Array, *, backend: str = "auto") -> jax.Array:
    """The social block's product on the user rows alone: `users [num_users, d] -> [num_users, d]`
    (users are the first rows of the full graph and the only ends of social links)."""
    num_users = users.shape[0]
    offsets = csr_offsets(graph, SOCIAL_EDGE)[: num_users + 1]
    transpose = None
    if SOCIAL_REVERSE_EDGE in edge_kinds(graph):
        transpose = (csr_offsets(graph, SOCIAL_REVERSE_EDGE)[: num_users + 1], graph.senders, graph.edges["weight"])
    return kernels.csr_matmul(
        offsets, graph.senders, graph.edges["weight"], users, transpose=transpose, backend=backend
    )


def gather_rows(x: jax.Array, indices: jax.Array, *, backend: str = "auto") -> jax.Array:
    """`x[indices]`, `[n, d], [m] -> [m, d]`, on `backend` (`kernels.take_rows`);
    float32 tables only take the kernel path, others index directly."""
    if x.dtype != jax.numpy.float32 or x.ndim != 2:
        return x[indices]
    return kernels.take_rows(x, indices, backend=backend)


def gathers_full_product(rows: jax.Array, num_nodes: int) -> bool:
    """Whether rows of a product are better taken from the full product, gathered once: with at
    least as many rows as nodes they repeat, and the full product costs less than the rows' own
    products and their scatter-add gradients. A static choice on the shapes."""
    return rows.shape[0] >= num_nodes


def aggregate_rows(
    graph: jraph.GraphsTuple,
    x: jax.Array,
    rows: jax.Array,
    *,
    kinds: Sequence[int] | None = None,
    backend: str = "auto",
):
    """Rows of `aggregate(graph, x)` only: `x [n_node, d], rows [r] -> [r, d]`.

    With at least as many rows as nodes (a small graph, a batch with many negatives) the full
    product is gathered instead (`gathers_full_product`)."""
    if gathers_full_product(rows, x.shape[0]):
        return gather_rows(aggregate(graph, x, kinds=kinds, backend=backend), rows, backend=backend)
    total = None
    for kind in _kinds(graph, kinds):
        product = kernels.csr_matmul_rows(
            csr_offsets(graph, kind), graph.senders, graph.edges["weight"], x, rows, backend=backend
        )
        total = product if total is None else total + product
    return jnp.zeros((rows.shape[0], x.shape[1]), x.dtype) if total is None else total


def lightgcn_propagate(
    graph: jraph.GraphsTuple,
    embeddings: jax.Array,
    num_layers: int,
    *,
    rows: jax.Array | None = None,
    backend: str = "auto",
) -> jax.Array:
    """LightGCN: the mean of `E_0 .. E_L` with `E_{l+1} = A_hat @ E_l`.

    Args:
      graph: the (symmetric, normalised) interaction graph.
      embeddings: `[n_node, d]` layer-0 embeddings.
      num_layers: L >= 0.
      rows: optional `[r]` int32 node indices. When given, only those rows of the result are
        returned, and the last layer is computed for them alone: the same numbers as
        `lightgcn_propagate(...)[rows]`, one full propagation cheaper forward and backward.

    Returns:
      `[n_node, d]`, or `[r, d]` when `rows` is given.
    """
    if rows is None:
        total = embeddings
        current = embeddings
        for _ in range(num_layers):
            current = aggregate(graph, current, backend=backend)
            total = total + current
        return total / (num_layers + 1)
    if num_layers == 0:
        return embeddings[rows]
    if gathers_full_product(rows, embeddings.shape[0]):
        # Small graphs: the full propagation, gathered once (one scatter in the gradient).
        return gather_rows(lightgcn_propagate(graph, embeddings, num_layers, backend=backend), rows, backend=backend)
    return _propagate_rows(embeddings, graph, rows, num_layers, backend)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _propagate_rows(embeddings, graph, rows, num_layers, backend):
    """`lightgcn_propagate(graph, embeddings, num_layers)[rows]`, the last layer for the rows alone."""
    return _propagate_rows_forward(embeddings, graph, rows, num_layers, backend)[0]


def _propagate_rows_forward(embeddings, graph, rows, num_layers, backend):
    # Each layer's transpose is kept as the vjp of its product (the CSR arrays only: the
    # propagation is linear), so the backward pass needs no forward values.
    layers, transposes = [embeddings], []
    for _ in range(num_layers - 1):
        current, transpose = jax.vjp(lambda x: aggregate(graph, x, backend=backend), layers[-1])
        layers.append(current)
        transposes.append(transpose)
    last, last_transpose = jax.vjp(lambda x: aggregate_rows(graph, x, rows, backend=backend), layers[-1])
    total = last
    for layer in layers:
        total = total + gather_rows(layer, rows, backend=backend)
    return total / (num_layers + 1), (transposes, last_transpose, rows)


def _propagate_rows_backward(num_layers, backend, residuals, cotangent):
    # Every layer's rows receive the output's cotangent directly; added in place into each
    # transposed product, it never becomes a dense [n_node, d] array of its own (which XLA
    # would zero, scatter into and add to every layer's gradient).
    transposes, last_transpose, rows = residuals
    share = cotangent / (num_layers + 1)
    (gradient,) = last_transpose(share)
    gradient = gradient.at[rows].add(share)
    for transpose in reversed(transposes):
        (gradient,) = transpose(gradient)
        gradient = gradient.at[rows].add(share)
    return gradient, None, None


_propagate_rows.defvjp(_propagate_rows_forward, _propagate_rows_backward)


class GCNLayer(nn.Module):
    """The original design's layer: `relu(A_hat @ (h W) + b)`, `[n_node, d_in] -> [n_node, features]`."""

    features: int
    backend: str = "auto"
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, h: jax.Array) -> jax.Array:
        h = nn.Dense(self.features, use_bias=False, name="linear")(h)
        h = aggregate(graph, h, backend=self.backend)
        h = h + self.param("bias", nn.initializers.zeros, (self.features,))
        return self.activation(h)


def gcn_propagate(
    layers: list[GCNLayer], graph: jraph.GraphsTuple, embeddings: jax.Array, *, rows: jax.Array | None = None
) -> jax.Array:
    """Stacked GCN layers; returns the mean of the input and every layer's output, `[n_node or r, d]`.

    Averaging the layer outputs (as LightGCN does) keeps each node's own embedding in its
    representation, which a plain stack of ReLU layers would wash out.
    """
    total = embeddings
    current = embeddings
    for layer in layers:
        current = layer(graph, current)
        total = total + current
    total = total / (len(layers) + 1)
    return total if rows is None else total[rows]
