import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphrec_jax.graph.build import (
    INTERACTION_EDGE,
    ITEM_NODE,
    SOCIAL_EDGE,
    SOCIAL_REVERSE_EDGE,
    USER_NODE,
    build_interaction_graph,
    node_degrees,
    pad_graph,
)
from graphrec_jax.graph.layers import aggregate
from graphrec_jax.graph.sparse import graph_operator
from tests.helpers import dense_adjacency


def test_bipartite_graph_has_two_directed_edges_per_interaction(tiny_interactions):
    num_users, num_items, users, items = tiny_interactions
    graph = build_interaction_graph(num_users, num_items, users, items)
    assert int(graph.n_node[0]) == num_users + num_items
    assert int(graph.n_edge[0]) == 2 * len(users)
    pairs = set(zip(graph.senders.tolist(), graph.receivers.tolist(), strict=True))
    for user, item in zip(users, items, strict=True):
        assert (user, num_users + item) in pairs and (num_users + item, user) in pairs
    assert (graph.nodes["kind"][:num_users] == USER_NODE).all()
    assert (graph.nodes["kind"][num_users:] == ITEM_NODE).all()


def test_symmetric_normalisation(tiny_interactions):
    num_users, num_items, users, items = tiny_interactions
    graph = build_interaction_graph(num_users, num_items, users, items)
    adjacency = dense_adjacency(graph)
    binary = (adjacency > 0).astype(float)
    degree = binary.sum(1)
    inverse = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1)), 0)
    np.testing.assert_allclose(adjacency, inverse[:, None] * binary * inverse[None, :], rtol=1e-6)
    np.testing.assert_allclose(adjacency, adjacency.T)
    np.testing.assert_array_equal(node_degrees(graph), degree)


def test_edges_sorted_by_receiver_with_csr_starts(tiny_interactions):
    graph = build_interaction_graph(*tiny_interactions)
    receivers = graph.receivers
    assert np.all(np.diff(receivers) >= 0)
    starts = graph.nodes["edge_start"]
    for node in range(int(graph.n_node[0])):
        assert np.all(receivers[starts[node] : starts[node] + node_degrees(graph)[node]] == node)


def test_isolated_items_are_nodes_without_edges():
    graph = build_interaction_graph(2, 3, np.array([0, 1]), np.array([0, 0]))
    assert int(graph.n_node[0]) == 5
    assert node_degrees(graph).tolist() == [1, 1, 2, 0, 0]


def test_out_of_range_indices_are_rejected():
    with pytest.raises(ValueError, match="item indices"):
        build_interaction_graph(2, 3, np.array([0]), np.array([3]))


FRIENDS = (np.array([0, 1, 1, 2, 5, 5]), np.array([1, 0, 2, 1, 0, 3]))  # 0-1 and 1-2 mutual, 5 follows 0 and 3


def _social_operator(num_nodes, followers, friends, weight):
    out_degree = np.bincount(followers, minlength=num_nodes)
    in_degree = np.bincount(friends, minlength=num_nodes)
    matrix = np.zeros((num_nodes, num_nodes))
    for user, friend in zip(followers, friends, strict=True):
        matrix[user, friend] += weight / np.sqrt(out_degree[user] * in_degree[friend])
    return matrix


@pytest.mark.parametrize("directed", [False, True])
def test_social_links_are_a_block_of_their_own(tiny_interactions, directed):
    num_users, num_items, users, items = tiny_interactions
    followers, friends = FRIENDS if directed else (FRIENDS[0][:4], FRIENDS[1][:4])
    plain = build_interaction_graph(num_users, num_items, users, items)
    graph = build_interaction_graph(num_users, num_items, users, items, social=(followers, friends), social_weight=0.5)
    # interactions first, exactly as without links; then the links, each block receiver-sorted
    np.testing.assert_array_equal(graph.nodes["edge_start"], plain.nodes["edge_start"])
    blocks = np.asarray(graph.edges["kind"])
    expected_kinds = [INTERACTION_EDGE, SOCIAL_EDGE] + ([SOCIAL_REVERSE_EDGE] if directed else [])
    assert [kind for kind in expected_kinds if kind in blocks] == expected_kinds and np.all(np.diff(blocks) >= 0)
    assert ("social_reverse_edge_start" in graph.nodes) == directed
    for kind in expected_kinds:
        rows = np.asarray(graph.receivers)[blocks == kind]
        assert np.all(np.diff(rows) >= 0)
    num_nodes = num_users + num_items
    expected = dense_adjacency(plain) + _social_operator(num_nodes, followers, friends, 0.5)
    np.testing.assert_allclose(dense_adjacency(graph), expected, rtol=1e-6)
    # one propagation step, and its gradient (the transpose) through the stored reverse block
    x = np.random.default_rng(0).normal(size=(num_nodes, 3)).astype(np.float32)
    np.testing.assert_allclose(aggregate(graph, x, backend="xla"), expected @ x, rtol=1e-5, atol=1e-6)
    weights = np.random.default_rng(1).normal(size=(num_nodes, 3)).astype(np.float32)
    gradient = jax.grad(lambda e: jnp.sum(aggregate(graph, e) * weights))(x)
    np.testing.assert_allclose(gradient, expected.T @ weights, rtol=1e-5, atol=1e-5)
    social_only = aggregate(graph, x, kinds=(SOCIAL_EDGE,), backend="xla")
    np.testing.assert_allclose(social_only, (expected - dense_adjacency(plain)) @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(node_degrees(graph, SOCIAL_EDGE)[:6], np.bincount(followers, minlength=6))


def test_graph_operator_merges_the_blocks_row_by_row(tiny_interactions):
    num_users, num_items, users, items = tiny_interactions
    graph = build_interaction_graph(num_users, num_items, users, items, social=FRIENDS)
    operator = graph_operator(graph)
    dense = np.zeros((operator.num_rows, operator.num_rows))
    rows = np.repeat(np.arange(operator.num_rows), operator.row_lengths())
    np.add.at(dense, (rows, operator.neighbors), operator.weights)
    np.testing.assert_allclose(dense, dense_adjacency(graph), rtol=1e-6)
    social_rows = rows[operator.kinds == SOCIAL_EDGE]
    assert set(social_rows.tolist()) == set(FRIENDS[0].tolist())


def test_padding_keeps_every_block(tiny_interactions):
    graph = build_interaction_graph(*tiny_interactions, social=FRIENDS)
    n, e = int(graph.n_node[0]), int(graph.n_edge[0])
    padded = pad_graph(graph, n + 4, e + 9)
    x = np.random.default_rng(2).normal(size=(n + 4, 2)).astype(np.float32)
    np.testing.assert_allclose(aggregate(padded, x)[:n], aggregate(graph, x[:n]), rtol=1e-5, atol=1e-6)


def test_padding_keeps_real_rows_and_zero_weight_padding(tiny_interactions):
    graph = build_interaction_graph(*tiny_interactions)
    n, e = int(graph.n_node[0]), int(graph.n_edge[0])
    padded = pad_graph(graph, n + 5, e + 7)
    assert padded.senders.shape == (e + 7,)
    assert np.all(np.asarray(padded.edges["weight"])[e:] == 0)
    np.testing.assert_array_equal(np.asarray(padded.nodes["edge_start"])[:n], graph.nodes["edge_start"])
    real = dense_adjacency(padded)[:n, :n]
    np.testing.assert_allclose(real, dense_adjacency(graph))
