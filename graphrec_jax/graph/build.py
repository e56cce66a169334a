"""The user-item interaction graph as a `jraph.GraphsTuple`, and its padding.

Node layout: users are nodes `0 .. num_users-1`, items are nodes
`num_users .. num_users+num_items-1`. Every interaction gives two directed edges
(user -> item and item -> user). Edges are sorted by receiver, then sender, so the
receiver-ordered edge list doubles as a CSR matrix: `graph.nodes["edge_start"]`
holds each node's first incoming edge, which the propagation kernels use as row
offsets.

Edge features (`graph.edges`):
  weight: float32 `[n_edge]`, the symmetric normalisation `1 / sqrt(deg(s) deg(r))`.
  kind: int8 `[n_edge]`, the edge type (0 = interaction). Further edge types, such as
    user-user social edges, are appended with their own kind and keep the same layout.
"""

from __future__ import annotations

import jax.numpy as jnp
import jraph
import numpy as np

USER_NODE = 0
ITEM_NODE = 1
INTERACTION_EDGE = 0


def build_interaction_graph(
    num_users: int,
    num_items: int,
    users: np.ndarray,
    items: np.ndarray,
    extra_edges: list[tuple[np.ndarray, np.ndarray, int]] | None = None,
) -> jraph.GraphsTuple:
    """Builds the bipartite graph with symmetric degree normalisation.

    Args:
      num_users, num_items: sizes of the id maps (isolated nodes are allowed; cold items are).
      users, items: `[n]` int user and item indices of the training interactions (deduplicated).
      extra_edges: optional `(senders, receivers, kind)` node-index arrays for further
        undirected edge types (each pair adds both directions), such as user-user links.

    Returns:
      A single-graph `jraph.GraphsTuple` with numpy leaves: `nodes` = {"kind" int8 `[n_node]`,
      "edge_start" int32 `[n_node]`}, `edges` = {"weight" float32, "kind" int8} `[n_edge]`,
      senders/receivers int32 `[n_edge]`. Not jittable (host-side construction).
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if users.shape != items.shape:
        raise ValueError(f"users {users.shape} and items {items.shape} must have the same shape")
    if len(users) and (users.min() < 0 or users.max() >= num_users):
        raise ValueError(f"user indices must lie in [0, {num_users}); got {users.min()}..{users.max()}")
    if len(items) and (items.min() < 0 or items.max() >= num_items):
        raise ValueError(f"item indices must lie in [0, {num_items}); got {items.min()}..{items.max()}")
    num_nodes = num_users + num_items
    senders = [users, items + num_users]
    receivers = [items + num_users, users]
    kinds = [np.full(2 * len(users), INTERACTION_EDGE, np.int8)]
    for extra_senders, extra_receivers, kind in extra_edges or []:
        senders += [np.asarray(extra_senders, np.int64), np.asarray(extra_receivers, np.int64)]
        receivers += [np.asarray(extra_receivers, np.int64), np.asarray(extra_senders, np.int64)]
        kinds.append(np.full(2 * len(extra_senders), kind, np.int8))
    senders = np.concatenate(senders)
    receivers = np.concatenate(receivers)
    kind = np.concatenate(kinds)
    if len(senders) >= 2**31:
        raise ValueError(f"{len(senders)} directed edges exceed int32 indexing; use the sampled mode")
    order = np.lexsort((senders, receivers))
    senders, receivers, kind = senders[order], receivers[order], kind[order]
    degree = np.bincount(receivers, minlength=num_nodes).astype(np.float64)
    inverse_sqrt = np.zeros_like(degree)
    np.divide(1.0, np.sqrt(degree), out=inverse_sqrt, where=degree > 0)
    weight = (inverse_sqrt[senders] * inverse_sqrt[receivers]).astype(np.float32)
    node_kind = np.concatenate([np.full(num_users, USER_NODE, np.int8), np.full(num_items, ITEM_NODE, np.int8)])
    return jraph.GraphsTuple(
        nodes={"kind": node_kind, "edge_start": edge_starts(receivers, num_nodes)},
        edges={"weight": weight, "kind": kind},
        senders=senders.astype(np.int32),
        receivers=receivers.astype(np.int32),
        n_node=np.array([num_nodes], np.int32),
        n_edge=np.array([len(senders)], np.int32),
        globals=None,
    )


def edge_starts(receivers: np.ndarray, num_nodes: int) -> np.ndarray:
    """First edge index of each node in a receiver-sorted edge list: `[num_nodes]` int32."""
    return np.searchsorted(receivers, np.arange(num_nodes), side="left").astype(np.int32)


def csr_offsets(graph: jraph.GraphsTuple):
    """Row offsets `[n_node + 1]` int32 of the receiver-sorted edge list (jittable)."""
    starts = graph.nodes["edge_start"]
    total = jnp.asarray(graph.senders.shape[-1], starts.dtype)
    return jnp.concatenate([starts, total[None]])


def pad_graph(graph: jraph.GraphsTuple, num_nodes: int, num_edges: int, num_graphs: int = 2) -> jraph.GraphsTuple:
    """Pads to a fixed budget with `jraph.pad_with_graphs`, keeping the CSR layout valid.

    Padding edges connect padding nodes only, carry weight 0, and sort after every real
    edge (their receiver is the first padding node), so real nodes' aggregates are
    unchanged whatever the budget. Not jittable (host-side numpy).
    """
    padded = jraph.pad_with_graphs(graph, num_nodes, num_edges, num_graphs)
    receivers = np.asarray(padded.receivers)
    if np.any(np.diff(receivers) < 0):
        raise ValueError("pad_graph needs a receiver-sorted graph (build it with build_interaction_graph)")
    nodes = dict(padded.nodes)
    nodes["edge_start"] = edge_starts(receivers, num_nodes)
    edges = dict(padded.edges)
    edges["weight"] = np.where(jraph.get_edge_padding_mask(padded), edges["weight"], 0.0).astype(np.float32)
    return padded._replace(nodes=nodes, edges=edges)


def node_degrees(graph: jraph.GraphsTuple) -> np.ndarray:
    """In-degree of every node, `[n_node]` int64 (host-side)."""
    offsets = np.append(np.asarray(graph.nodes["edge_start"]), len(graph.senders))
    return np.diff(offsets).astype(np.int64)
