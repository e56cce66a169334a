"""Layer-wise inference and item-sharded top-K against their unchunked references."""

import jax
import numpy as np
import pytest

from graphrec_jax.evaluation import top_k_items
from graphrec_jax.graph import build_interaction_graph
from graphrec_jax.inference import node_representations, propagate_layerwise, row_blocks, sparse_dense, top_k_sharded
from graphrec_jax.layers import lightgcn_propagate
from graphrec_jax.model import RecommenderModel
from graphrec_jax.neighbor_sampling import graph_operator
from tests.helpers import dense_adjacency

NUM_USERS, NUM_ITEMS = 40, 25


@pytest.fixture(scope="module")
def graph():
    rng = np.random.default_rng(0)
    # a power-law-ish item popularity, so blocks of hub rows are cut by the edge budget
    items = np.minimum((rng.pareto(1.2, 400) * 3).astype(int), NUM_ITEMS - 1)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, NUM_USERS - 2, 400), items, strict=True)}
    users, items = (np.array(column, np.int32) for column in zip(*sorted(pairs), strict=True))
    return build_interaction_graph(NUM_USERS, NUM_ITEMS, users, items)  # the last 2 users are isolated


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
    result = node_representations(model, params, graph, text_features, chunk_rows=6)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def _exclusions(graph):
    users = np.asarray(graph.receivers)[np.asarray(graph.receivers) < NUM_USERS]
    items = np.asarray(graph.senders)[np.asarray(graph.receivers) < NUM_USERS] - NUM_USERS
    offsets = np.searchsorted(users, np.arange(NUM_USERS + 1)).astype(np.int64)
    return offsets, items.astype(np.int32)


@pytest.mark.parametrize("shard_size", [1, 4, 7, 25, 100])
def test_sharded_top_k_equals_unsharded(graph, shard_size):
    rng = np.random.default_rng(4)
    user_vectors = rng.normal(size=(NUM_USERS, 6)).astype(np.float32)
    item_vectors = rng.normal(size=(NUM_ITEMS, 6)).astype(np.float32)
    item_vectors[7] = item_vectors[3]  # exact ties across shards go to the lower item index
    item_vectors[20] = item_vectors[3]
    users = np.array([0, 5, 5, 39, 12, 38, 1, 2, 3])
    for exclude in (None, _exclusions(graph)):
        for candidates in (None, np.array([2, 3, 7, 11, 20, 24])):
            for k in (1, 5, 8):
                expected = top_k_items(
                    user_vectors, item_vectors, users, k, exclude=exclude, candidate_items=candidates, chunk_size=4
                )
                result = top_k_sharded(
                    user_vectors,
                    item_vectors,
                    users,
                    k,
                    exclude=exclude,
                    candidate_items=candidates,
                    user_chunk_size=4,
                    item_shard_size=shard_size,
                )
                np.testing.assert_array_equal(result[0], expected[0])
                np.testing.assert_allclose(result[1], expected[1], rtol=1e-6)
    # fewer candidates than k: the tail is -1 / -inf
    items, scores = top_k_sharded(
        user_vectors, item_vectors, users[:2], 8, candidate_items=np.array([1, 2]), item_shard_size=shard_size
    )
    assert (items[:, 2:] == -1).all() and np.isneginf(scores[:, 2:]).all()
