import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphrec_jax.graph.build import build_interaction_graph
from graphrec_jax.graph.layers import GCNLayer, aggregate, lightgcn_propagate
from graphrec_jax.models.network import RecommenderModel
from tests.helpers import dense_adjacency

BACKENDS = ["xla", "auto"]


@pytest.fixture
def graph_and_embeddings(tiny_interactions):
    graph = build_interaction_graph(*tiny_interactions)
    n = int(graph.n_node[0])
    embeddings = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    return graph, embeddings


@pytest.mark.parametrize("backend", BACKENDS)
def test_aggregate_is_normalised_adjacency_product(graph_and_embeddings, backend):
    graph, x = graph_and_embeddings
    expected = dense_adjacency(graph) @ x
    np.testing.assert_allclose(aggregate(graph, x, backend=backend), expected, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lightgcn_is_mean_of_layer_powers(graph_and_embeddings, backend):
    graph, x = graph_and_embeddings
    a = dense_adjacency(graph)
    expected = (x + a @ x + a @ a @ x + a @ a @ a @ x) / 4
    result = jax.jit(lambda g, e: lightgcn_propagate(g, e, 3, backend=backend))(graph, x)
    np.testing.assert_allclose(result, expected, atol=1e-5)


def assert_rows_match_full_propagation(graph, x, rows, backend, seed):
    """`lightgcn_propagate(..., rows=rows)` equals the full propagation's rows, and so does its
    gradient (eager and jitted) under a random weighting of the rows."""
    weights = jnp.asarray(np.random.default_rng(seed).normal(size=(len(rows), x.shape[1])).astype(np.float32))

    def full(e):
        return jnp.sum(lightgcn_propagate(graph, e, 3, backend=backend)[rows] * weights)

    def restricted(e):
        return jnp.sum(lightgcn_propagate(graph, e, 3, rows=rows, backend=backend) * weights)

    np.testing.assert_allclose(restricted(x), full(x), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(restricted)(x), jax.grad(full)(x), atol=1e-5)
    np.testing.assert_allclose(jax.jit(jax.grad(restricted))(x), jax.grad(full)(x), atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("many_rows", [False, True])  # True: more rows than nodes (the gathered full product)
def test_rows_variant_matches_full_propagation_and_its_gradient(graph_and_embeddings, backend, many_rows):
    graph, x = graph_and_embeddings
    rows = jnp.array([0, 3, 3, 15, 20], jnp.int32)
    if many_rows:
        rows = jnp.asarray(np.random.default_rng(2).integers(0, len(x), 3 * len(x)).astype(np.int32))
    assert_rows_match_full_propagation(graph, x, rows, backend, seed=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_gradient_on_a_graph_with_directed_social_links_and_item_links(tiny_interactions, backend):
    """The restricted propagation's own backward pass (each layer's transpose, the rows'
    cotangent added in place) on a graph whose social block is not symmetric."""
    num_users, num_items, users, items = tiny_interactions
    graph = build_interaction_graph(
        num_users,
        num_items,
        users,
        items,
        social=(np.array([0, 1, 2, 5]), np.array([1, 2, 0, 3])),  # one direction only
        social_weight=0.5,
        item_links=(np.array([0, 1]), np.array([1, 0]), np.array([0.3, 0.3], np.float32)),
    )
    x = np.random.default_rng(3).normal(size=(int(graph.n_node[0]), 8)).astype(np.float32)
    rows = jnp.array([0, 2, 2, num_users + 1, 5], jnp.int32)
    assert_rows_match_full_propagation(graph, x, rows, backend, seed=4)


def test_gcn_layer_is_relu_of_aggregated_linear_map(graph_and_embeddings):
    graph, x = graph_and_embeddings
    layer = GCNLayer(features=4)
    params = layer.init(jax.random.PRNGKey(0), graph, x)
    kernel = np.asarray(params["params"]["linear"]["kernel"])
    expected = np.maximum(dense_adjacency(graph) @ (x @ kernel), 0)
    np.testing.assert_allclose(layer.apply(params, graph, x), expected, atol=1e-5)


@pytest.mark.parametrize("architecture", ["lightgcn", "gcn"])
def test_model_rows_match_full_representations(tiny_interactions, architecture):
    graph = build_interaction_graph(*tiny_interactions)
    model = RecommenderModel(num_nodes=int(graph.n_node[0]), embedding_dim=8, num_layers=2, architecture=architecture)
    params = model.init(jax.random.PRNGKey(0), graph)
    full, _ = model.apply(params, graph)
    rows = jnp.array([1, 14, 2])
    selected, inputs = model.apply(params, graph, rows=rows)
    np.testing.assert_allclose(selected, full[rows], atol=1e-5)
    np.testing.assert_allclose(inputs, params["params"]["node_embedding"][rows])
