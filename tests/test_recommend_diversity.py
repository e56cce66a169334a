"""Re-ranking for diversity in serving, end to end: `Recommender.recommend(..., diversity=...)`, item categories
through the checkpoint, `scripts/score.py`'s options and `scripts/evaluate.py --beyond-accuracy`.

One tiny model (configs/test.py: a synthetic catalogue whose items carry category paths) is trained per module.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import runpy
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from configs import test as test_config
from graphrec_jax.checkpoint import checkpoint_directory
from graphrec_jax.cli import EXIT_USER_ERROR, run_evaluation
from graphrec_jax.data.prepare import prepare_dataset
from graphrec_jax.serving.beyond_accuracy import beyond_accuracy_metrics, item_popularity, labels_to_csr
from graphrec_jax.serving.diversity import diversified_top_k, unit_rows
from graphrec_jax.serving.ranking import csr_by_user, top_k_items
from graphrec_jax.serving.recommender import Recommender, RequestError
from graphrec_jax.training.workdir import train_and_evaluate
from tests.helpers import REPO_ROOT

K = 8


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    train_and_evaluate(test_config.get_config(), workdir)
    return workdir


@pytest.fixture(scope="module")
def recommender(workdir):
    return Recommender.from_checkpoint(workdir)


def top_matrix(recommender: Recommender, table: pd.DataFrame, k: int = K) -> np.ndarray:
    """A recommend() table of every user (in user_ids order) as `[users, k]` item indices."""
    assert (table.groupby("user_id", sort=False).size() == k).all()
    return recommender.item_map.to_index(list(table["item_id"])).reshape(-1, k)


def diversity_metrics(recommender: Recommender, top: np.ndarray) -> dict[str, float]:
    return beyond_accuracy_metrics(
        top,
        [top.shape[1]],
        item_vectors=np.asarray(recommender.item_representations),
        item_categories=labels_to_csr(recommender.item_categories),
    )


def test_checkpoint_keeps_item_categories(recommender):
    dataset = prepare_dataset(test_config.get_config().data)
    assert dataset.item_categories is not None and any(dataset.item_categories)
    assert recommender.item_categories == [tuple(labels) for labels in dataset.item_categories]


@pytest.mark.parametrize("method", ["mmr", "dpp"])
def test_diversity_zero_is_todays_ranking(recommender, method):
    users = recommender.user_ids
    today = recommender.recommend(users, k=K)
    pd.testing.assert_frame_equal(recommender.recommend(users, k=K, diversity=0.0, method=method, pool=30), today)
    # the re-ranking path itself, at diversity 0, gives the same lists too
    indices = recommender.user_map.to_index(users)
    items, scores = diversified_top_k(
        recommender.user_representations,
        recommender.item_representations,
        indices,
        K,
        item_features=unit_rows(recommender.item_representations),
        diversity=0.0,
        pool=30,
        method=method,
        exclude=csr_by_user(recommender.setup.dataset.train, len(recommender.user_map)),
    )
    np.testing.assert_array_equal(items, top_matrix(recommender, today))
    np.testing.assert_allclose(scores.ravel(), today["score"].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("method", ["mmr", "dpp"])
@pytest.mark.parametrize("diversify_by, metric", [("categories", "ild_category"), ("representation", "ild")])
def test_diversity_changes_lists_and_raises_ild(recommender, method, diversify_by, metric):
    users = recommender.user_ids
    before = top_matrix(recommender, recommender.recommend(users, k=K))
    table = recommender.recommend(users, k=K, diversity=0.6, method=method, diversify_by=diversify_by)
    after = top_matrix(recommender, table)
    assert (after != before).any(axis=1).mean() > 0.5
    key = f"{metric}@{K}"
    assert diversity_metrics(recommender, after)[key] > diversity_metrics(recommender, before)[key] + 0.02
    # the scores are the model's relevance scores of the chosen items
    first = table[table.user_id == users[0]]
    np.testing.assert_allclose(
        first["score"].to_numpy(), recommender.score([users[0]], list(first["item_id"]))[0], rtol=1e-5
    )


@pytest.mark.parametrize("method", ["mmr", "dpp"])
def test_seen_items_never_appear_and_candidates_hold(recommender, method):
    users = recommender.user_ids
    dataset = recommender.setup.dataset
    candidates = recommender.item_ids[::2]
    table = recommender.recommend(users, k=K, diversity=0.8, method=method, candidates=candidates, pool=12)
    assert set(table["item_id"]) <= set(candidates)
    for user, rows in table.groupby("user_id"):
        index = recommender.user_map.to_index([user])[0]
        seen = set(dataset.train.items[dataset.train.users == index])
        assert not seen & set(recommender.item_map.to_index(list(rows["item_id"])))
        assert rows["item_id"].is_unique
    few = recommender.recommend(users[:3], k=5, diversity=0.5, method=method, candidates=recommender.item_ids[:3])
    assert len(few) <= 9 and set(few["item_id"]) <= set(recommender.item_ids[:3])


def test_dpp_window(recommender):
    table = recommender.recommend(recommender.user_ids[:5], k=K, diversity=0.5, method="dpp", window=3)
    assert len(table) == 5 * K and table.groupby("user_id")["item_id"].nunique().eq(K).all()


def with_text_features(recommender: Recommender, item_categories) -> Recommender:
    """A copy whose setup carries (random) text features, as a text fusion's does."""
    text = copy.copy(recommender)
    num_nodes = len(recommender.user_map) + len(recommender.item_map)
    features = np.random.default_rng(0).normal(size=(num_nodes, 6)).astype(np.float32)
    text.setup = dataclasses.replace(recommender.setup, text_features=features)
    text.item_categories = item_categories
    return text


def test_diversify_by_each_source_and_auto(recommender):
    users = recommender.user_ids[:12]
    options = dict(k=K, diversity=0.7, method="mmr")
    by_categories = recommender.recommend(users, diversify_by="categories", **options)
    by_representation = recommender.recommend(users, diversify_by="representation", **options)
    pd.testing.assert_frame_equal(recommender.recommend(users, **options), by_categories)  # auto: categories
    assert not by_categories.equals(by_representation)
    with pytest.raises(RequestError, match=r"no text features; available: 'auto', 'categories', 'representation'"):
        recommender.recommend(users, diversify_by="text", **options)

    text = with_text_features(recommender, recommender.item_categories)
    by_text = text.recommend(users, diversify_by="text", **options)
    indices = recommender.user_map.to_index(users)
    items, _ = diversified_top_k(
        recommender.user_representations,
        recommender.item_representations,
        indices,
        K,
        item_features=unit_rows(text.setup.text_features[len(recommender.user_map) :]),
        diversity=0.7,
        pool=50,
        exclude=csr_by_user(recommender.setup.dataset.train, len(recommender.user_map)),
    )
    np.testing.assert_array_equal(top_matrix(recommender, by_text), items)
    pd.testing.assert_frame_equal(text.recommend(users, **options), by_categories)  # categories first
    no_categories = with_text_features(recommender, None)
    pd.testing.assert_frame_equal(no_categories.recommend(users, **options), by_text)  # then text

    plain = copy.copy(recommender)
    plain.item_categories = None
    pd.testing.assert_frame_equal(plain.recommend(users, **options), by_representation)  # then representations
    with pytest.raises(RequestError, match=r"no item categories or tags in its data; available: 'auto', 'repr"):
        plain.recommend(users, diversify_by="categories", **options)


def test_similarity_features_follow_replaced_representations(recommender):
    """The unit rows kept between requests are rebuilt when the representations are replaced."""
    rec = copy.copy(recommender)
    rec.__dict__.pop("_unit_rows_cache", None)
    users = rec.user_ids[:12]
    options = dict(k=K, diversity=0.7, method="mmr", diversify_by="representation")
    rec.recommend(users, **options)  # fills the cache from the trained representations
    replaced = np.random.default_rng(1).normal(size=np.shape(rec.item_representations)).astype(np.float32)
    rec.item_representations = replaced

    def expected(features):
        items, _ = diversified_top_k(
            rec.user_representations,
            replaced,
            rec.user_map.to_index(users),
            K,
            item_features=features,
            diversity=0.7,
            pool=50,
            exclude=csr_by_user(rec.setup.dataset.train, len(rec.user_map)),
        )
        return items

    fresh = expected(unit_rows(replaced))
    assert not np.array_equal(fresh, expected(unit_rows(np.asarray(recommender.item_representations))))
    np.testing.assert_array_equal(top_matrix(rec, rec.recommend(users, **options)), fresh)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"diversity": 1.5}, r"diversity=1.5 must lie in \[0, 1\]"),
        ({"diversity": -0.1}, r"must lie in \[0, 1\]"),
        ({"diversity": True}, "must be a number"),
        ({"diversity": "0.3"}, "must be a number"),
        ({"method": "xquad"}, "method='xquad' must be one of 'mmr', 'dpp'"),
        ({"pool": 4}, "pool=4 must be at least k=8"),
        ({"pool": 0}, "pool=0 must be a positive integer"),
        ({"window": 3}, "window=3 applies to method='dpp' only"),
        ({"window": 0, "method": "dpp"}, "window=0 must be a positive integer"),
        ({"diversify_by": "colour"}, "diversify_by='colour' must be one of 'auto', 'categories'"),
    ],
)
def test_bad_options_are_request_errors(recommender, options, message):
    with pytest.raises(RequestError, match=message):
        recommender.recommend(recommender.user_ids[:2], k=K, **options)


def test_checkpoint_without_item_categories_still_restores(workdir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(workdir, old)
    for metadata in checkpoint_directory(old).glob("*/metadata/metadata"):
        payload = json.loads(metadata.read_text())
        del payload["item_categories"]
        metadata.write_text(json.dumps(payload))
    restored = Recommender.from_checkpoint(old)
    assert restored.item_categories is None
    users = restored.user_ids[:5]
    table = restored.recommend(users, k=K, diversity=0.5)  # auto: representations
    assert len(table) == 5 * K
    with pytest.raises(RequestError, match="diversify_by='categories'"):
        restored.recommend(users, k=K, diversity=0.5, diversify_by="categories")


def run_script_main(script: str, arguments: list[str], monkeypatch) -> int:
    """Runs `scripts/<script>`'s main() in this process; returns its exit status."""
    main = runpy.run_path(str(REPO_ROOT / "scripts" / script))["main"]
    monkeypatch.setattr(sys, "argv", [script, *arguments])
    with pytest.raises(SystemExit) as stopped:
        main()
    return stopped.value.code


def test_score_script_takes_the_diversity_options(workdir, recommender, tmp_path, monkeypatch, capsys):
    users = recommender.user_ids[:3]
    out = tmp_path / "recs.csv"
    arguments = ["--workdir", str(workdir), "--users", ",".join(users), "--k", "5", "--out", str(out)]
    diverse = ["--diversity", "0.6", "--method", "dpp", "--pool", "20", "--diversify-by", "representation"]
    assert run_script_main("score.py", [*arguments, *diverse, "--window", "4"], monkeypatch) == 0
    written = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    expected = recommender.recommend(
        users, k=5, diversity=0.6, method="dpp", pool=20, diversify_by="representation", window=4
    )
    assert list(written["item_id"]) == [str(item) for item in expected["item_id"]]
    capsys.readouterr()
    assert run_script_main("score.py", [*arguments, "--diversity", "0.5", "--diversify-by", "text"], monkeypatch) == (
        EXIT_USER_ERROR
    )
    assert capsys.readouterr().err.strip().startswith("error: diversify_by='text': this model has no text features")
    assert run_script_main("score.py", [*arguments, "--pool", "3"], monkeypatch) == EXIT_USER_ERROR
    assert "pool=3 must be at least k=5" in capsys.readouterr().err


def test_evaluate_beyond_accuracy(workdir, recommender, tmp_path, monkeypatch):
    plain = run_evaluation(str(workdir))
    assert not any("/ild" in key or "/novelty" in key for key in plain)  # off by default
    out = tmp_path / "metrics.json"
    assert (
        run_script_main("evaluate.py", ["--workdir", str(workdir), "--beyond-accuracy", "--out", str(out)], monkeypatch)
        == 0
    )
    metrics = json.loads(out.read_text())
    k = test_config.get_config().eval.k
    for name in ("ild", "ild_category", "category_coverage", "coverage", "novelty", "gini"):
        assert f"test/{name}@{k}" in metrics
    assert metrics[f"test/recall@{k}"] == plain[f"test/recall@{k}"]
    # the same figures from the recommender's own top-k of the test users
    dataset = prepare_dataset(recommender.config.data)
    test = dataset.evaluation["test"]
    users = np.unique(test.interactions.users)
    train_by_user = csr_by_user(dataset.train, dataset.num_users)
    top, _ = top_k_items(
        recommender.user_representations, recommender.item_representations, users, k, exclude=train_by_user
    )
    expected = beyond_accuracy_metrics(
        top,
        [k],
        item_vectors=np.asarray(recommender.item_representations),
        item_categories=labels_to_csr(dataset.item_categories),
        item_popularity=item_popularity(train_by_user, dataset.num_items),
        num_users=dataset.num_users,
        candidate_items=dataset.num_items,
    )
    for key, value in expected.items():
        assert metrics[f"test/{key}"] == pytest.approx(value, rel=1e-6), key
