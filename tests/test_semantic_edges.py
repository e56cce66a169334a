"""Item-item semantic edges: the kNN graph against dense references, its block in the graph,
sampled subgraphs, the id-dropout path, training with every fusion, and new items' links."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from graphrec_jax.config import ConfigError, validate_config
from graphrec_jax.graph.build import ITEM_EDGE, ITEM_NODE, build_interaction_graph, pad_graph
from graphrec_jax.graph.semantic import nearest_items, semantic_item_links
from graphrec_jax.graph.subgraphs import NeighborSampler, pad_subgraph
from graphrec_jax.models.network import RecommenderModel
from graphrec_jax.serving.recommender import Recommender
from graphrec_jax.training.workdir import train_and_evaluate
from tests.helpers import dense_adjacency

NUM_USERS, NUM_ITEMS, K = 30, 20, 3


@pytest.fixture(scope="module")
def item_features():
    return np.random.default_rng(3).normal(size=(NUM_ITEMS, 6)).astype(np.float32)


@pytest.fixture(scope="module")
def interactions():
    rng = np.random.default_rng(0)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, NUM_USERS, 200), rng.integers(0, 16, 200), strict=True)}
    users, items = (np.array(column, np.int32) for column in zip(*sorted(pairs), strict=True))
    return users, items  # items 16..19 have no interactions: cold


def dense_semantic(features, k, weight):
    """The reference: dense cosine, top-k per row (itself excluded, positive only), union of both
    directions, D^-1/2 S D^-1/2 times the weight."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit.astype(np.float64) @ unit.T.astype(np.float64)
    np.fill_diagonal(similarity, -np.inf)
    kept = np.zeros_like(similarity, bool)
    for row in range(len(features)):
        top = np.argsort(-similarity[row], kind="stable")[:k]
        kept[row, top[similarity[row, top] > 0]] = True
    kept |= kept.T
    links = np.where(kept, similarity, 0.0)
    degree = links.sum(axis=1)
    scale = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1e-30)), 0.0)
    return weight * scale[:, None] * links * scale[None, :]


def test_nearest_items_are_the_top_k_by_cosine_without_the_item_itself(item_features):
    neighbours, similarities = nearest_items(item_features, K)
    unit = item_features / np.linalg.norm(item_features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    for row in range(NUM_ITEMS):
        expected = np.argsort(-similarity[row], kind="stable")[:K]
        expected = expected[similarity[row, expected] > 0]
        assert neighbours[row][neighbours[row] >= 0].tolist() == expected.tolist()
        np.testing.assert_allclose(similarities[row][: len(expected)], similarity[row, expected], rtol=1e-5)
        assert row not in neighbours[row]


def test_links_are_symmetric_and_normalised_as_the_dense_reference(item_features):
    receivers, senders, weights = semantic_item_links(item_features, K, weight=0.7)
    matrix = np.zeros((NUM_ITEMS, NUM_ITEMS))
    matrix[receivers, senders] = weights
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
    np.testing.assert_allclose(matrix, dense_semantic(item_features, K, 0.7), rtol=1e-5, atol=1e-7)
    assert len(set(zip(receivers.tolist(), senders.tolist(), strict=True))) == len(receivers)  # one weight per pair
    assert np.all((np.diff(receivers) > 0) | ((np.diff(receivers) == 0) & (np.diff(senders) > 0)))
    # every item keeps at least its own k neighbours (more where others chose it)
    assert np.all(np.bincount(receivers, minlength=NUM_ITEMS) >= K)


def test_chunked_top_k_equals_unchunked(item_features):
    whole = semantic_item_links(item_features, K, chunk_elements=NUM_ITEMS * NUM_ITEMS)
    for chunk_elements in (1, NUM_ITEMS * 3, NUM_ITEMS * 7 + 5):
        chunked = semantic_item_links(item_features, K, chunk_elements=chunk_elements)
        for a, b in zip(whole, chunked, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_degenerate_catalogues():
    assert all(len(part) == 0 for part in semantic_item_links(np.ones((1, 4)), 5))
    receivers, senders, weights = semantic_item_links(np.eye(3), 2)  # orthogonal: nothing similar
    assert len(receivers) == 0
    receivers, _, weights = semantic_item_links(np.ones((3, 4)), 10)  # k above n - 1
    assert len(receivers) == 6
    np.testing.assert_allclose(weights, 0.5)  # every degree 2, every similarity 1


def graph_with_links(interactions, item_features, weight=1.0):
    return build_interaction_graph(
        NUM_USERS, NUM_ITEMS, *interactions, item_links=semantic_item_links(item_features, K, weight)
    )


def test_the_kind_of_block_in_the_graph_tuple(interactions, item_features):
    plain = build_interaction_graph(NUM_USERS, NUM_ITEMS, *interactions)
    graph = graph_with_links(interactions, item_features, weight=0.5)
    kinds = np.asarray(graph.edges["kind"])
    assert "item_edge_start" in graph.nodes and np.all(np.diff(kinds) >= 0)
    items = np.asarray(graph.receivers)[kinds == ITEM_EDGE]
    assert np.all(items >= NUM_USERS)
    expected = np.zeros((NUM_USERS + NUM_ITEMS,) * 2)
    expected[NUM_USERS:, NUM_USERS:] = dense_semantic(item_features, K, 0.5)
    np.testing.assert_allclose(dense_adjacency(graph) - dense_adjacency(plain), expected, rtol=1e-5, atol=1e-7)
    # padding keeps every block's rows
    padded = pad_graph(graph, NUM_USERS + NUM_ITEMS + 5, int(graph.n_edge[0]) + 9)
    embeddings = np.random.default_rng(0).normal(size=(NUM_USERS + NUM_ITEMS + 5, 4)).astype(np.float32)
    model = RecommenderModel(num_nodes=NUM_USERS + NUM_ITEMS, embedding_dim=4, num_layers=1)
    params = {"node_embedding": jnp.asarray(embeddings[: NUM_USERS + NUM_ITEMS])}
    full = model.apply({"params": params}, graph)[0]
    model_padded = RecommenderModel(num_nodes=NUM_USERS + NUM_ITEMS + 5, embedding_dim=4, num_layers=1)
    padded_out = model_padded.apply({"params": {"node_embedding": jnp.asarray(embeddings)}}, padded)[0]
    np.testing.assert_allclose(padded_out[: NUM_USERS + NUM_ITEMS], full, atol=1e-6)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_full_fanout_subgraph_is_exact_with_semantic_edges(interactions, item_features, num_layers):
    graph = graph_with_links(interactions, item_features, weight=0.8)
    sampler = NeighborSampler(graph, NUM_USERS, [100] * num_layers)
    seeds = np.array([0, 4, 4, NUM_USERS + 1, NUM_USERS + 7, NUM_USERS + 17, NUM_USERS + 18])  # 17, 18 cold
    subgraph, positions = sampler.sample(seeds, np.random.default_rng(1))
    assert ITEM_EDGE in np.asarray(subgraph.edges["kind"])
    padded = pad_subgraph(subgraph, int(subgraph.n_node[0]) + 40, int(subgraph.n_edge[0]) + 64)
    text = jnp.asarray(np.concatenate([np.zeros((NUM_USERS, 6), np.float32), item_features]))
    model = RecommenderModel(
        num_nodes=NUM_USERS + NUM_ITEMS, embedding_dim=8, num_layers=num_layers, fusion="text_node_input"
    )
    params = model.init(jax.random.PRNGKey(0), graph, text)["params"]
    cotangent = np.random.default_rng(2).normal(size=(len(seeds), 8)).astype(np.float32)

    def outputs_and_gradients(graph, rows):
        def loss(params):
            return jnp.sum(model.apply({"params": params}, graph, text, rows=rows)[0] * cotangent)

        return model.apply({"params": params}, graph, text, rows=rows)[0], jax.grad(loss)(params)

    full, full_grads = outputs_and_gradients(graph, jnp.asarray(seeds, jnp.int32))
    part, part_grads = outputs_and_gradients(padded, jnp.asarray(positions))
    np.testing.assert_allclose(part, full, atol=1e-5)
    for full_grad, part_grad in zip(jax.tree.leaves(full_grads), jax.tree.leaves(part_grads), strict=True):
        np.testing.assert_allclose(part_grad, full_grad, atol=1e-5)


@pytest.mark.parametrize("fusion", ["concat", "text_node_input"])
@pytest.mark.parametrize("repeats", [1, NUM_USERS + NUM_ITEMS])  # more rows than nodes: the gathered path
def test_an_item_hidden_by_id_dropout_is_represented_as_a_cold_item(interactions, item_features, fusion, repeats):
    # A cold item's representation at inference is its text plus what its semantic edges bring;
    # in training, an item whose id is dropped gets the same from its semantic edges alone.
    graph = graph_with_links(interactions, item_features)
    text = jnp.asarray(np.concatenate([np.zeros((NUM_USERS, 6), np.float32), item_features]))
    model = RecommenderModel(
        num_nodes=NUM_USERS + NUM_ITEMS, embedding_dim=8, num_layers=2, fusion=fusion, id_dropout=0.9999
    )
    params = model.init(jax.random.PRNGKey(0), graph, text)["params"]
    cold = jnp.asarray([NUM_USERS + 17, NUM_USERS + 19] * repeats, jnp.int32)
    inference = model.apply({"params": params}, graph, text, rows=cold)[0]
    hidden = model.apply(
        {"params": params}, graph, text, rows=cold, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)}
    )[0]
    np.testing.assert_allclose(hidden, inference, atol=1e-5)
    plain = build_interaction_graph(NUM_USERS, NUM_ITEMS, *interactions)
    without_links = model.apply({"params": params}, plain, text, rows=cold)[0]
    assert not np.allclose(without_links, inference, atol=1e-3), "the semantic edges brought nothing"


def test_config_validation_names_the_keys():
    config = test_config.get_config()
    config.model.text.semantic_k = -1
    with pytest.raises(ConfigError, match="model.text.semantic_k"):
        validate_config(config)
    config.model.text.semantic_k = 5
    config.model.text.semantic_weight = 0.0
    with pytest.raises(ConfigError, match="model.text.semantic_weight"):
        validate_config(config)
    config.model.text.semantic_weight = 1.0
    with pytest.raises(ConfigError, match="model.text.encoder"):  # graph_only without an encoder
        validate_config(config)
    config.model.text.encoder = "some/bert"
    validate_config(config)  # graph_only with an encoder: its items' text is encoded for the links
    config.model.fusion = "text_only"
    with pytest.raises(ConfigError, match="model.fusion='text_only'"):
        validate_config(config)
    config.model.fusion = "text_node_input"
    config.model.text.regime = "finetune"
    with pytest.raises(ConfigError, match="model.text.regime='finetune'"):
        validate_config(config)


def _config(tiny_bert, fusion, semantic_k=4):
    config = test_config.get_config()
    config.data.synthetic.cold_item_ratio = 0.2
    config.data.split.method = "cold_item"
    config.model.fusion = fusion
    config.model.id_dropout = 0.3
    config.model.text.encoder = tiny_bert
    config.model.text.max_length = 32
    config.model.text.semantic_k = semantic_k
    config.model.text.semantic_weight = 0.5
    return config


@pytest.mark.parametrize(
    ("fusion", "mode"),
    [("text_node_input", "full"), ("concat", "full"), ("graph_only", "full"), ("text_node_input", "sampled")],
)
def test_semantic_edges_train_with_every_fusion_in_full_and_sampled_mode(
    tiny_bert, tmp_path, monkeypatch, fusion, mode
):
    monkeypatch.setenv("GRAPHREC_CACHE_DIR", str(tmp_path / "cache"))
    config = _config(tiny_bert, fusion)
    if mode == "sampled":
        config.sampling.mode = "sampled"
        config.sampling.fanouts = "5,3"
        config.sampling.prefetch_batches = 0
    metrics = train_and_evaluate(config, tmp_path / "run")
    assert np.isfinite(metrics["loss"]) and 0.0 <= metrics["cold/recall@10"] <= 1.0
    recommender = Recommender.from_checkpoint(tmp_path / "run", which="latest")
    assert ITEM_EDGE in np.asarray(recommender.setup.graph.edges["kind"])  # rebuilt from the saved features


def test_added_items_are_linked_to_their_textual_neighbours(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHREC_CACHE_DIR", str(tmp_path / "cache"))
    config = _config(tiny_bert, "text_node_input", semantic_k=3)
    train_and_evaluate(config, tmp_path / "run")
    recommender = Recommender.from_checkpoint(tmp_path / "run", which="latest")
    warm = int(np.unique(recommender.setup.dataset.train.items)[0])
    twin = recommender.item_texts[warm]  # a warm item's own text: its nearest neighbour is that item
    recommender.add_items(["twin"], [twin])
    setup = recommender.setup
    new_node = setup.num_users + setup.dataset.num_items - 1
    graph = setup.graph
    kinds, receivers, senders = (np.asarray(array) for array in (graph.edges["kind"], graph.receivers, graph.senders))
    linked = senders[(kinds == ITEM_EDGE) & (receivers == new_node)]
    assert len(linked) >= 3 and setup.num_users + warm in linked
    assert np.all(np.asarray(graph.nodes["kind"])[linked] == ITEM_NODE)
    # Its representation follows its neighbours': change their id embeddings and it moves.
    before = np.asarray(recommender.score(recommender.user_ids[:4], ["twin"]))
    params = dict(recommender.params)
    params["node_embedding"] = jnp.asarray(params["node_embedding"]).at[linked].multiply(3.0)
    recommender.params = params
    recommender._refresh_representations()
    after = np.asarray(recommender.score(recommender.user_ids[:4], ["twin"]))
    assert not np.allclose(before, after, atol=1e-4)
