import numpy as np
import pytest

from graphrec_jax.graph.build import ITEM_NODE, USER_NODE, build_interaction_graph, node_degrees, pad_graph
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


def test_extra_edge_types_keep_the_layout(tiny_interactions):
    num_users, num_items, users, items = tiny_interactions
    graph = build_interaction_graph(num_users, num_items, users, items, extra_edges=[(np.array([0]), np.array([1]), 1)])
    assert int(graph.n_edge[0]) == 2 * len(users) + 2
    assert (graph.edges["kind"] == 1).sum() == 2
    assert np.all(np.diff(graph.receivers) >= 0)


def test_padding_keeps_real_rows_and_zero_weight_padding(tiny_interactions):
    graph = build_interaction_graph(*tiny_interactions)
    n, e = int(graph.n_node[0]), int(graph.n_edge[0])
    padded = pad_graph(graph, n + 5, e + 7)
    assert padded.senders.shape == (e + 7,)
    assert np.all(np.asarray(padded.edges["weight"])[e:] == 0)
    np.testing.assert_array_equal(np.asarray(padded.nodes["edge_start"])[:n], graph.nodes["edge_start"])
    real = dense_adjacency(padded)[:n, :n]
    np.testing.assert_allclose(real, dense_adjacency(graph))
