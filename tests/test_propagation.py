"""Layer-wise inference against the model's own full propagation."""

import jax
import numpy as np
import pytest

from graphrec_jax.graph.layers import lightgcn_propagate
from graphrec_jax.graph.sparse import graph_operator, row_blocks, sparse_dense
from graphrec_jax.models.network import RecommenderModel
from graphrec_jax.serving.propagation import node_representations, propagate_layerwise
from tests.helpers import dense_adjacency

NUM_USERS, NUM_ITEMS = 40, 25


@pytest.fixture(scope="module")
def graph(power_law_graph):
    return power_law_graph


def test_row_blocks_cover_every_row_within_the_edge_budget(graph):
    operator = graph_operator(graph)
    blocks, budget = row_blocks(operator, chunk_rows=7)
    assert blocks[0][0] == 0 and blocks[-1][1] == operator.num_rows
    assert all(end == nxt for (_, end), (nxt, _) in zip(blocks, blocks[1:], strict=False))
    for first, end in blocks:
        assert 0 < end - first <= 7
        assert operator.offsets[end] - operator.offsets[first] <= budget


@pytest.mark.parametrize("backend", ["auto", "xla"])
def test_layerwise_propagation_equals_full_graph_propagation(graph, backend):
    embeddings = np.random.default_rng(1).normal(size=(NUM_USERS + NUM_ITEMS, 16)).astype(np.float32)
    expected = np.asarray(lightgcn_propagate(graph, embeddings, 3))
    operator = graph_operator(graph)
    for chunk_rows in (1, 5, 1000):
        result = propagate_layerwise([operator] * 3, embeddings, chunk_rows=chunk_rows, backend=backend)
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        sparse_dense(operator, embeddings, chunk_rows=3), dense_adjacency(graph) @ embeddings, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    ("architecture", "fusion"),
    [
        ("lightgcn", "graph_only"),
        ("lightgcn", "text_node_input"),
        ("lightgcn", "concat"),
        ("gcn", "graph_only"),
        ("lightgcn", "text_only"),
    ],
)
def test_node_representations_equal_the_model(graph, architecture, fusion):
    num_nodes = NUM_USERS + NUM_ITEMS
    text = np.random.default_rng(2).normal(size=(num_nodes, 12)).astype(np.float32)
    text[:NUM_USERS] = 0.0
    model = RecommenderModel(
        num_nodes=num_nodes, embedding_dim=8, num_layers=2, architecture=architecture, fusion=fusion
    )
    text_features = None if fusion == "graph_only" else text
    params = model.init(jax.random.PRNGKey(3), graph, text_features)["params"]
    expected = np.asarray(model.apply({"params": params}, graph, text_features)[0])
    result = node_representations(model, params, graph, text_features, layerwise=True, chunk_rows=6)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
