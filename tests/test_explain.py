"""Explanations: the shares of the score over the user's neighbours are exact (they sum to the
score, and match a dense-matrix reference), friends appear in social models, the script
speaks, and models without a linear decomposition say so."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import test as test_config
from graphrec_jax.serving import explain
from graphrec_jax.serving.recommender import Recommender, RequestError
from graphrec_jax.training.workdir import train_and_evaluate
from tests.helpers import REPO_ROOT, dense_adjacency, override


def _train(tmp_path_factory, name: str, **overrides):
    config = test_config.get_config()
    config.train.num_epochs = 2
    override(config, **overrides)
    workdir = tmp_path_factory.mktemp(name)
    train_and_evaluate(config, workdir)
    return Recommender.from_checkpoint(workdir), workdir


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return _train(tmp_path_factory, "plain")


@pytest.fixture(scope="module")
def social(tmp_path_factory):
    return _train(tmp_path_factory, "social", **{"data.synthetic.friends_per_user": 3, "model.social_weight": 0.7})


def _exact_sums(recommender, pairs):
    users = [user for user, _ in pairs]
    items = [item for _, item in pairs]
    table = recommender.explain_pairs(users, items, k=3)
    scores = recommender.score(users, items)
    for (user, item), rows in table.groupby(["user_id", "item_id"], sort=False):
        total = rows.contribution[rows.kind.isin(["item", "friend", "own", "remainder"])].sum()
        expected = scores[users.index(user), items.index(item)]
        assert total == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert rows.score.iloc[0] == pytest.approx(expected, rel=1e-5, abs=1e-7)
        evidence = rows[rows.kind.isin(["item", "friend"])]
        assert evidence.contribution.is_monotonic_decreasing and len(evidence) <= 3
    return table


def _pairs(recommender, count=12, seed=0):
    rng = np.random.default_rng(seed)
    users = rng.choice(recommender.user_ids, count)
    items = rng.choice(recommender.item_ids, count)
    return list(zip(users.tolist(), items.tolist(), strict=True))


def test_shares_sum_to_the_score(plain):
    recommender, _ = plain
    table = _exact_sums(recommender, _pairs(recommender))
    assert set(table.kind) == {"item", "own", "remainder"}  # no friends without social links


def test_shares_match_a_dense_reference(plain):
    recommender, _ = plain
    setup = recommender.setup
    model, graph = setup.model, setup.graph
    params = recommender.params
    inputs = np.asarray(jax.jit(model.clone(num_layers=0).apply)({"params": params}, graph)[1], np.float64)
    adjacency = dense_adjacency(graph)
    layers = [np.linalg.matrix_power(adjacency, power) for power in range(model.num_layers + 1)]
    propagation = sum(layers) / (model.num_layers + 1)
    z = propagation @ inputs
    user, item = 3, 7
    target = z[setup.num_users + item]
    # brute force: the share of neighbour h is A[u, h] * (sum_{m < L} A^m E)_h / (L + 1) . z_i
    partial = sum(layers[: model.num_layers]) @ inputs / (model.num_layers + 1)
    neighbours = np.flatnonzero(adjacency[user])
    shares = {int(h): adjacency[user, h] * partial[h] @ target for h in neighbours}
    found = explain.explain_pairs(
        explain.compute_sources(model, params, graph), np.array([user]), np.array([item]), setup.num_users, k=50
    )
    got = {int(h): c for h, c in zip(found.neighbours[0], found.contributions[0], strict=True) if h >= 0}
    assert got.keys() == shares.keys()
    for node, share in shares.items():
        assert got[node] == pytest.approx(share, rel=1e-4, abs=1e-7)
    assert found.own[0] == pytest.approx(inputs[user] @ target / (model.num_layers + 1), rel=1e-4, abs=1e-7)
    assert found.score[0] == pytest.approx(z[user] @ target, rel=1e-4)


def test_friends_are_evidence_in_a_social_model(social):
    recommender, _ = social
    table = _exact_sums(recommender, _pairs(recommender, 20, seed=1))
    friends = table[table.kind == "friend"]
    assert len(friends), "no friend among the strongest evidence of 20 pairs"
    for row in friends.itertuples():
        user = recommender.user_map.to_index([row.user_id])[0]
        links = recommender.setup.dataset.social
        assert row.evidence_id in recommender.user_map.raw_ids[links.friends[links.users == user]]


def test_explain_recommendations_ranks_and_explains_the_top(plain):
    recommender, _ = plain
    user = recommender.user_ids[2]
    table = recommender.explain_recommendations(user, k=3, evidence=2)
    top = recommender.recommend([user], k=3)
    assert table.drop_duplicates("item_id").item_id.tolist() == top.item_id.tolist()
    assert table.drop_duplicates("item_id")["rank"].tolist() == [1, 2, 3]
    history = set(
        recommender.item_map.raw_ids[
            recommender.setup.dataset.train.items[
                recommender.setup.dataset.train.users == recommender.user_map.to_index([user])[0]
            ]
        ].tolist()
    )
    assert set(table[table.kind == "item"].evidence_id) <= history


def test_models_without_a_linear_decomposition_say_so(tmp_path_factory):
    recommender, _ = _train(tmp_path_factory, "gcn", **{"model.name": "gcn"})
    with pytest.raises(RequestError, match="not linear in its inputs"):
        recommender.explain(recommender.user_ids[0], recommender.item_ids[0])


def test_the_script_explains_in_words_and_writes_the_table(plain, tmp_path):
    recommender, workdir = plain
    user = recommender.user_ids[0]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), GRAPHREC_HUGEPAGES="0")
    command = [sys.executable, str(REPO_ROOT / "scripts" / "explain.py"), "--workdir", str(workdir), "--user", user]
    result = subprocess.run(
        [*command, "--top", "2", "--out", str(tmp_path / "why.json")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("1. ") and "recommended because you interacted with" in lines[0]
    records = json.loads((tmp_path / "why.json").read_text())
    assert {record["kind"] for record in records} >= {"item", "own", "remainder"}
    missing = subprocess.run([*command, "--item", "no-such-item"], env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: unknown item id")


@pytest.mark.parametrize("fusion", ["text_node_input", "concat"])
def test_text_models_split_the_score_and_weigh_each_field(tiny_bert, tmp_path_factory, monkeypatch, fusion):
    monkeypatch.setenv("GRAPHREC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    overrides = {
        "model.fusion": fusion,
        "model.text.encoder": tiny_bert,
        "model.text.max_length": 32,
        "data.text.item_fields": "title,brand,categories",
    }
    recommender, _ = _train(tmp_path_factory, fusion, **overrides)
    table = _exact_sums(recommender, _pairs(recommender, 8, seed=3))
    assert "text" in set(table.kind)
    user, item = recommender.user_ids[1], recommender.item_ids[5]
    fields = recommender.explain(user, item, fields=True)
    shares = dict(
        zip(fields[fields.kind == "field"].evidence_id, fields[fields.kind == "field"].contribution, strict=True)
    )
    assert set(shares) == {"title", "brand", "categories"}
    # one field by hand: re-encode the item without its brand, propagate, score again
    from graphrec_jax.serving.propagation import node_representations
    from graphrec_jax.text.features import encode_records

    index = recommender.item_map.to_index([item])[0]
    record = {key: value for key, value in recommender.item_texts[index].items() if key != "brand"}
    features = np.array(recommender.setup.text_features)
    encoded = encode_records([record], "title,brand,categories", recommender._text_encoder(), pooling="mean")
    features[recommender.setup.num_users + index] = encoded[0]
    values = np.asarray(
        node_representations(recommender.setup.model, recommender.params, recommender.setup.graph, features)
    )
    user_index = recommender.user_map.to_index([user])[0]
    without = values[user_index] @ values[recommender.setup.num_users + index]
    score = recommender.score([user], [item])[0, 0]
    assert shares["brand"] == pytest.approx(score - without, rel=1e-3, abs=1e-5)
