"""Social recommendation end to end on the synthetic catalogue with friendships: the joint
LightGCN and SocialLGN, full and sampled, text with friends, users with friends and no
history, checkpoints, serving."""

import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from graphrec_jax.config import ConfigError
from graphrec_jax.data.errors import DataError
from graphrec_jax.data.prepare import prepare_dataset
from graphrec_jax.graph.build import friends_only_users
from graphrec_jax.graph.layers import lightgcn_propagate
from graphrec_jax.graph.sparse import sparse_dense
from graphrec_jax.models.setup import build_setup, init_params
from graphrec_jax.serving.explain import compute_sources
from graphrec_jax.serving.propagation import node_representations
from graphrec_jax.serving.recommender import Recommender
from graphrec_jax.training.workdir import train_and_evaluate
from tests.helpers import override


def _config(architecture: str = "sociallgn", **overrides):
    config = test_config.get_config()
    config.data.synthetic.friends_per_user = 3
    config.data.split.method = "cold_user"
    config.data.split.cold_user_ratio = 0.2
    config.model.name = architecture
    config.train.num_epochs = 6
    config.train.eval_every_epochs = 3
    override(config, **overrides)
    return config


@pytest.fixture(scope="module", params=["sociallgn", "lightgcn"])
def trained(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(request.param)
    config = _config(request.param)
    metrics = train_and_evaluate(config, workdir)
    return config, workdir, metrics


def test_social_models_learn_and_reach_users_without_history(trained):
    config, workdir, metrics = trained
    # 40 items, about 2 held out per warm user: random top-10 recall is about 0.25
    assert metrics["test/recall@10"] > 0.4
    assert np.isfinite(metrics["cold_users/recall@10"]) and metrics["cold_users/num_users"] == 12
    recommender = Recommender.from_checkpoint(workdir)
    dataset = prepare_dataset(config.data)
    cold = sorted(set(dataset.evaluation["cold_users"].interactions.users.tolist()))
    cold_ids = [recommender.user_map.raw_ids[user] for user in cold]
    assert set(cold_ids) <= set(recommender.user_ids)
    assert not np.isin(cold, recommender.setup.dataset.train.users).any()
    table = recommender.recommend(cold_ids, k=5)
    assert len(table) == 5 * len(cold_ids)
    # a user without history is placed by their friends: their representation is not their
    # untrained initial embedding, and it moves when the friends' embeddings move
    user = cold[0]
    representation = recommender.user_representations[user]
    assert np.linalg.norm(representation) > 0
    params = dict(recommender.params)
    embedding = np.asarray(params["node_embedding"]).copy()
    friends = recommender.setup.dataset.social.friends[recommender.setup.dataset.social.users == user]
    embedding[friends] *= -1.0
    params["node_embedding"] = embedding
    moved = np.asarray(node_representations(recommender.setup.model, params, recommender.setup.graph))[user]
    assert not np.allclose(moved, representation, atol=1e-4)


def test_similar_users_come_from_the_representations(trained):
    _, workdir, _ = trained
    recommender = Recommender.from_checkpoint(workdir)
    users = recommender.user_ids[:3]
    table = recommender.similar_users(users, k=4)
    assert list(table.columns) == ["user_id", "rank", "similar_user_id", "score"]
    assert len(table) == 12 and not (table.user_id == table.similar_user_id).any()
    vectors = np.asarray(recommender.user_representations)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    first = recommender.user_map.to_index([users[0]])[0]
    expected = np.argsort(-(vectors @ vectors[first]), kind="stable")[1:5]
    assert table[table.user_id == users[0]].similar_user_id.tolist() == recommender.user_map.raw_ids[expected].tolist()


def test_the_checkpoint_keeps_the_links(trained):
    config, workdir, _ = trained
    recommender = Recommender.from_checkpoint(workdir)
    dataset = prepare_dataset(config.data)
    np.testing.assert_array_equal(recommender.setup.dataset.social.users, dataset.social.users)
    np.testing.assert_array_equal(recommender.setup.dataset.social.friends, dataset.social.friends)
    assert "social_edge_start" in recommender.setup.graph.nodes


@pytest.mark.parametrize("architecture", ["sociallgn", "lightgcn"])
def test_sampled_training_with_friends(tmp_path, architecture):
    config = _config(architecture, **{"sampling.mode": "sampled", "sampling.fanouts": "4,3"})
    metrics = train_and_evaluate(config, tmp_path)
    assert metrics["test/recall@10"] > 0.4 and np.isfinite(metrics["cold_users/recall@10"])


def test_social_weight_zero_is_lightgcn_without_friends():
    with_friends = _config("lightgcn", **{"model.social_weight": 0.0})
    dataset = prepare_dataset(with_friends.data)
    setup = build_setup(with_friends, dataset)
    params = init_params(setup, 0)
    plain = build_setup(with_friends, dataset.__class__(**{**dataset.__dict__, "social": None}))
    np.testing.assert_allclose(
        node_representations(setup.model, params, setup.graph),
        node_representations(plain.model, params, plain.graph),
        atol=1e-6,
    )


def test_sociallgn_needs_links_and_uniform_hops(tmp_path):
    config = _config("sociallgn", **{"data.synthetic.friends_per_user": 0})
    with pytest.raises(DataError, match="model.name='sociallgn' needs social links"):
        train_and_evaluate(config, tmp_path / "a")
    config = _config("sociallgn", **{"sampling.mode": "sampled", "sampling.fanouts": "4,3"})
    config.sampling.method = "importance"
    with pytest.raises(ConfigError, match="sampling.method='importance' cannot feed model.name='sociallgn'"):
        train_and_evaluate(config, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_text_and_friends_in_one_model(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHREC_CACHE_DIR", str(tmp_path / "cache"))
    config = _config(
        "sociallgn",
        **{
            "model.fusion": "text_node_input",
            "model.text.encoder": tiny_bert,
            "model.text.max_length": 32,
            "data.text.item_fields": "title,categories",
        },
    )
    metrics = train_and_evaluate(config, tmp_path / "run")
    assert metrics["test/recall@10"] > 0.3 and np.isfinite(metrics["cold_users/recall@10"])
    recommender = Recommender.from_checkpoint(tmp_path / "run")
    assert recommender.setup.text_features is not None and "social_fusion" in recommender.params


def test_users_without_history_leave_out_their_own_term():
    """LightGCN represents a user with friends and no history by what its friends bring, without
    its own layer-0 term (an id row never trained on a history of its own); every other node as
    plain LightGCN does; the layer-wise propagation and the explanations' decomposition agree."""
    config = _config("lightgcn")
    dataset = prepare_dataset(config.data)
    setup = build_setup(config, dataset)
    params = init_params(setup, 0)
    cold = np.unique(dataset.evaluation["cold_users"].interactions.users)
    friends_only = np.flatnonzero(np.asarray(friends_only_users(setup.graph)))
    assert len(cold) == 12 and friends_only.tolist() == cold.tolist()

    embedding = np.asarray(params["node_embedding"])
    plain = np.asarray(lightgcn_propagate(setup.graph, embedding, config.model.num_layers))
    expected = plain.copy()
    expected[cold] -= embedding[cold] / (config.model.num_layers + 1)
    compiled = np.asarray(node_representations(setup.model, params, setup.graph))
    np.testing.assert_allclose(compiled, expected, atol=1e-6)
    assert not np.allclose(compiled[cold], plain[cold], atol=1e-3)
    # a batch's rows (the loss's users and items) see the same representations, cold users included
    rows = np.concatenate([cold, np.arange(0, dataset.num_users + dataset.num_items, 7)])
    batch_rows = setup.model.apply({"params": params}, setup.graph, rows=jnp.asarray(rows, jnp.int32))[0]
    np.testing.assert_allclose(batch_rows, compiled[rows], atol=1e-6)
    assert np.asarray(friends_only_users(setup.graph, jnp.asarray(rows))).tolist() == np.isin(rows, cold).tolist()
    layerwise = node_representations(setup.model, params, setup.graph, layerwise=True)
    np.testing.assert_allclose(layerwise, compiled, atol=1e-6)

    sources = compute_sources(setup.model, params, setup.graph)
    np.testing.assert_allclose(sources.representations, compiled, atol=1e-6)
    assert not sources.own[cold].any()
    # a representation is its own share plus its neighbours' propagated shares, so scores split exactly
    np.testing.assert_allclose(sources.own + sparse_dense(sources.operator, sources.partial), compiled, atol=1e-6)


def test_without_friend_weight_nobody_is_served_by_friends_alone():
    config = _config("lightgcn", **{"model.social_weight": 0.0})
    setup = build_setup(config, prepare_dataset(config.data))
    assert not np.asarray(friends_only_users(setup.graph)).any()
