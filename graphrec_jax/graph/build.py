"""The recommendation graph as a `jraph.GraphsTuple`: users, items, and the edges between them.

Node layout: users are nodes `0 .. num_users-1`, items are nodes
`num_users .. num_users+num_items-1`. Every interaction gives two directed edges
(user -> item and item -> user); every social link `user -> friend` gives an edge in which the
user receives from the friend; item-item links join items.

Edges come in blocks by kind, in the order of `BLOCKS`: interactions, social links, their
transpose (only for directed links), item-item links. Each block is sorted by receiver, then
sender, so it doubles as a CSR matrix whose row offsets are the node feature the block names
(`graph.nodes["edge_start"]` for interactions, `"social_edge_start"` for social links, ...):
a propagation layer multiplies by one block, or sums several, with one kernel call each and
no edge visited twice. A block's rows end where the next present block begins.

Edge features (`graph.edges`):
  weight: float32 `[n_edge]`. Interactions: `1 / sqrt(deg(s) deg(r))` with interaction
    degrees (LightGCN's symmetric normalisation). Social links: `social_weight /
    sqrt(out(r) in(s))` with social degrees, normalised on their own (symmetric for undirected
    links). Item-item links: the weights given.
  kind: int8 `[n_edge]`, the block's kind (`INTERACTION_EDGE`, `SOCIAL_EDGE`, ...).
"""

from __future__ import annotations

import jax.numpy as jnp
import jraph
import numpy as np

USER_NODE = 0
ITEM_NODE = 1
INTERACTION_EDGE = 0
SOCIAL_EDGE = 1
SOCIAL_REVERSE_EDGE = 2  # the transpose of directed social links: the gradient's operator only
ITEM_EDGE = 3

# (node feature holding the block's row starts, edge kind), in edge order.
BLOCKS = (
    ("edge_start", INTERACTION_EDGE),
    ("social_edge_start", SOCIAL_EDGE),
    ("social_reverse_edge_start", SOCIAL_REVERSE_EDGE),
    ("item_edge_start", ITEM_EDGE),
)
_START_OF = {kind: key for key, kind in BLOCKS}


def build_interaction_graph(
    num_users: int,
    num_items: int,
    users: np.ndarray,
    items: np.ndarray,
    *,
    social: tuple[np.ndarray, np.ndarray] | None = None,
    social_weight: float = 1.0,
    item_links: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> jraph.GraphsTuple:
    """Builds the graph: interactions, and optionally social and item-item links.

    Args:
      num_users, num_items: sizes of the id maps (isolated nodes are allowed; cold items are).
      users, items: `[n]` int user and item indices of the training interactions (deduplicated).
      social: `(users [m], friends [m])` user indices: user `users[j]` receives from
        `friends[j]` (`data.types.SocialLinks` order). A symmetric set (both directions of every
        friendship) makes a symmetric block; otherwise the block's transpose is stored as well.
      social_weight: the social block's weight relative to the interactions'.
      item_links: `(receivers [l], senders [l], weights [l])` item indices and weights of
        item-item links, given in both directions with equal weights.

    Returns:
      A single-graph `jraph.GraphsTuple` with numpy leaves: `nodes` = {"kind" int8, one
      int32 row-start array per present block} `[n_node]`, `edges` = {"weight" float32,
      "kind" int8} `[n_edge]`, senders/receivers int32 `[n_edge]`. Not jittable (host).
    """
    users = _indices(users, num_users, "user")
    items = _indices(items, num_items, "item")
    if users.shape != items.shape:
        raise ValueError(f"users {users.shape} and items {items.shape} must have the same shape")
    num_nodes = num_users + num_items
    degree = np.bincount(np.concatenate([users, items + num_users]), minlength=num_nodes)
    blocks = [
        _block(
            np.concatenate([items + num_users, users]),
            np.concatenate([users, items + num_users]),
            None,
            degree,
            degree,
            INTERACTION_EDGE,
        )
    ]
    if social is not None and len(social[0]):
        followers, friends = (_indices(side, num_users, "social user") for side in social)
        out_degree = np.bincount(followers, minlength=num_nodes)
        in_degree = np.bincount(friends, minlength=num_nodes)
        weight = np.float64(social_weight)
        blocks.append(_block(followers, friends, None, out_degree, in_degree, SOCIAL_EDGE, weight))
        forward = np.sort(followers.astype(np.int64) * num_nodes + friends)
        backward = np.sort(friends.astype(np.int64) * num_nodes + followers)
        if not np.array_equal(forward, backward):  # directed: the gradient needs the transpose
            blocks.append(_block(friends, followers, None, out_degree, in_degree, SOCIAL_REVERSE_EDGE, weight, True))
    if item_links is not None and len(item_links[0]):
        receivers, senders, weights = item_links
        receivers = _indices(receivers, num_items, "item link") + num_users
        senders = _indices(senders, num_items, "item link") + num_users
        blocks.append(_block(receivers, senders, np.asarray(weights, np.float64), None, None, ITEM_EDGE))
    return _assemble(blocks, num_users, num_items)


def _indices(values, size: int, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    if len(values) and (values.min() < 0 or values.max() >= size):
        raise ValueError(f"{what} indices must lie in [0, {size}); got {values.min()}..{values.max()}")
    return values


def _block(receivers, senders, weights, receiver_degree, sender_degree, kind, scale=1.0, transposed=False):
    """One block's (receivers, senders, weights, kind), sorted by receiver then sender. Weights are
    `scale / sqrt(receiver_degree[r] sender_degree[s])` unless given (a transposed block keeps
    the forward block's weight of each link: the receiver's degree is the sender's here)."""
    receivers, senders = np.asarray(receivers, np.int64), np.asarray(senders, np.int64)
    if weights is None:
        first, second = (senders, receivers) if transposed else (receivers, senders)
        product = receiver_degree[first].astype(np.float64) * sender_degree[second]
        weights = scale / np.sqrt(np.maximum(product, 1))
    order = np.lexsort((senders, receivers))
    return receivers[order], senders[order], np.asarray(weights, np.float64)[order], kind


def _assemble(blocks, num_users: int, num_items: int) -> jraph.GraphsTuple:
    num_nodes = num_users + num_items
    total = sum(len(block[0]) for block in blocks)
    if total >= 2**31:
        raise ValueError(f"{total} directed edges exceed int32 indexing; use the sampled mode")
    nodes = {"kind": np.concatenate([np.full(num_users, USER_NODE, np.int8), np.full(num_items, ITEM_NODE, np.int8)])}
    offset = 0
    for receivers, _, _, kind in blocks:
        nodes[_START_OF[kind]] = (offset + edge_starts(receivers, num_nodes)).astype(np.int32)
        offset += len(receivers)
    return jraph.GraphsTuple(
        nodes=nodes,
        edges={
            "weight": np.concatenate([block[2] for block in blocks]).astype(np.float32),
            "kind": np.concatenate([np.full(len(block[0]), block[3], np.int8) for block in blocks]),
        },
        senders=np.concatenate([block[1] for block in blocks]).astype(np.int32),
        receivers=np.concatenate([block[0] for block in blocks]).astype(np.int32),
        n_node=np.array([num_nodes], np.int32),
        n_edge=np.array([total], np.int32),
        globals=None,
    )


def edge_starts(receivers: np.ndarray, num_nodes: int) -> np.ndarray:
    """First edge index of each node in a receiver-sorted edge list: `[num_nodes]` int32."""
    return np.searchsorted(receivers, np.arange(num_nodes), side="left").astype(np.int32)


def block_keys(graph: jraph.GraphsTuple) -> list[str]:
    """The node features of the blocks `graph` holds, in edge order."""
    return [key for key, _ in BLOCKS if key in graph.nodes]


def csr_offsets(graph: jraph.GraphsTuple, kind: int = INTERACTION_EDGE):
    """Row offsets `[n_node + 1]` int32 of one block (jittable): its rows end where the next
    present block begins, the last one at the end of the edge list (padding edges included)."""
    keys = block_keys(graph)
    key = _START_OF[kind]
    starts = graph.nodes[key]
    following = keys.index(key) + 1
    if following < len(keys):
        end = graph.nodes[keys[following]][..., :1]
    else:
        end = jnp.full(starts.shape[:-1] + (1,), graph.senders.shape[-1], starts.dtype)
    return jnp.concatenate([starts, end], axis=-1)


def edge_kinds(graph: jraph.GraphsTuple) -> list[int]:
    """The kinds of the blocks `graph` holds, in edge order."""
    return [kind for key, kind in BLOCKS if key in graph.nodes]


def pad_graph(graph: jraph.GraphsTuple, num_nodes: int, num_edges: int, num_graphs: int = 2) -> jraph.GraphsTuple:
    """Pads to a fixed budget with `jraph.pad_with_graphs`, keeping every block's CSR valid.

    Padding nodes have empty rows in every block; padding edges connect padding nodes only,
    carry weight 0 and follow every real edge (rows of the last block), so real nodes'
    aggregates are unchanged whatever the budget. Not jittable (host-side numpy).
    """
    real_nodes, real_edges = int(np.sum(graph.n_node)), int(np.sum(graph.n_edge))
    padded = jraph.pad_with_graphs(graph, num_nodes, num_edges, num_graphs)
    nodes = dict(padded.nodes)
    keys = block_keys(graph)
    for index, key in enumerate(keys):
        starts = np.asarray(nodes[key]).copy()
        if index + 1 < len(keys):
            starts[real_nodes:] = np.asarray(graph.nodes[keys[index + 1]])[0]  # empty rows
        else:
            tail = edge_starts(np.asarray(padded.receivers)[real_edges:], num_nodes)
            starts[real_nodes:] = real_edges + tail[real_nodes:]
        nodes[key] = starts.astype(np.int32)
    edges = dict(padded.edges)
    edges["weight"] = np.where(jraph.get_edge_padding_mask(padded), edges["weight"], 0.0).astype(np.float32)
    return padded._replace(nodes=nodes, edges=edges)


def friends_only_users(graph: jraph.GraphsTuple, rows=None):
    """`[n_node]` bool, or `[r]` for the nodes `rows` (jittable, O(rows) from the blocks' row
    offsets): the users whose only edges are friend links of positive weight, users with friends
    and no training interaction (a cold-user split's, or added by `data.social.unknown_users="add"`);
    all False in a graph without social links or with `model.social_weight=0`. Padding nodes
    hold only zero-weight edges and are never among them."""
    kinds = edge_kinds(graph)
    nodes = jnp.arange(graph.nodes["kind"].shape[0]) if rows is None else rows
    if SOCIAL_EDGE not in kinds:
        return jnp.zeros(nodes.shape, bool)
    social = csr_offsets(graph, SOCIAL_EDGE)
    first, end = social[nodes], social[nodes + 1]
    # a row's friend links all carry the block's weight scaled by degrees: its first one says whether it is zero
    weight = graph.edges["weight"][jnp.minimum(first, graph.edges["weight"].shape[0] - 1)]
    friends = (end > first) & (weight > 0)
    if INTERACTION_EDGE in kinds:
        interactions = csr_offsets(graph, INTERACTION_EDGE)
        friends &= interactions[nodes + 1] == interactions[nodes]
    return (graph.nodes["kind"][nodes] == USER_NODE) & friends


def node_degrees(graph: jraph.GraphsTuple, kind: int = INTERACTION_EDGE) -> np.ndarray:
    """In-degree of every node within one block, `[n_node]` int64 (host-side)."""
    return np.diff(np.asarray(csr_offsets(graph, kind))).astype(np.int64)
