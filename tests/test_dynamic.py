"""Dynamic updates: fold-in of new users and interactions (`Recommender.add_interactions`), its
formula, the served calls after it, save and restore, incremental training (`training.update`,
`scripts/update.py`) and the refusals around them."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from configs import test as test_config
from graphrec_jax.config import ConfigError
from graphrec_jax.data.errors import DataError
from graphrec_jax.data.prepare import prepare_dataset
from graphrec_jax.data.types import Interactions, UnknownIdError
from graphrec_jax.graph.sparse import graph_operator
from graphrec_jax.models.setup import build_setup, init_params
from graphrec_jax.serving import explain, foldin
from graphrec_jax.serving.propagation import node_representations
from graphrec_jax.serving.ranking import csr_by_user
from graphrec_jax.serving.recommender import Recommender, RequestError
from graphrec_jax.training.run import build_run
from graphrec_jax.training.update import update_from_workdir, write_run
from graphrec_jax.training.workdir import train_and_evaluate
from tests.helpers import REPO_ROOT


def _config(**overrides):
    config = test_config.get_config()
    config.train.num_epochs = 2
    for key, value in overrides.items():
        section = config
        *parents, leaf = key.split(".")
        for parent in parents:
            section = section[parent]
        section[leaf] = value
    return config


def _untrained(**overrides) -> Recommender:
    """A recommender over the synthetic catalogue with initial parameters: no training needed."""
    config = _config(**overrides)
    setup = build_setup(config, prepare_dataset(config.data))
    return Recommender(config, setup, init_params(setup, config.seed), step=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    config = _config()
    workdir = tmp_path_factory.mktemp("trained")
    train_and_evaluate(config, workdir)
    return config, workdir


@pytest.fixture
def workdir_copy(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained[1], copy)
    return copy


def _partial(recommender) -> np.ndarray:
    setup = recommender.setup
    return explain.compute_sources(setup.model, recommender.params, setup.graph).partial


def _expected(recommender, partial_before: np.ndarray, old_users: int, user: int) -> np.ndarray:
    """`E_u / (L + 1) + sum_h A[u, h] M_h` over the grown graph's row of `user`, with the
    neighbours' `M` from before the fold-in (new users shift item rows)."""
    operator = graph_operator(recommender.setup.graph)
    row = slice(operator.offsets[user], operator.offsets[user + 1])
    shift = len(recommender.user_map) - old_users
    neighbours = operator.neighbors[row].astype(np.int64)
    neighbours = np.where(neighbours >= len(recommender.user_map), neighbours - shift, neighbours)
    scale = 1.0 / (recommender.config.model.num_layers + 1)
    own = np.asarray(recommender.params["node_embedding"])[user] * scale
    return own + operator.weights[row] @ partial_before[neighbours]


@pytest.mark.parametrize("method", ["propagate", "solve"])
def test_a_new_user_is_folded_in_by_the_formula(method):
    recommender = _untrained()
    partial = _partial(recommender)
    history = recommender.item_ids[:6]
    old_users = len(recommender.user_map)
    counts = recommender.add_interactions(
        pd.DataFrame({"user_id": ["newcomer"] * 6, "item_id": history}), method=method
    )
    assert counts == {"new_users": 1, "new_interactions": 6, "known_interactions": 0}
    user = int(recommender.user_map.to_index(["newcomer"])[0])
    assert user == old_users  # after the known users
    own = np.asarray(recommender.params["node_embedding"])[user]
    assert np.any(own != 0) if method == "solve" else np.all(own == 0)
    np.testing.assert_allclose(
        np.asarray(recommender.user_representations)[user],
        _expected(recommender, partial, old_users, user),
        rtol=1e-5,
        atol=1e-6,
    )
    # by hand for "propagate": the items' M over sqrt(d_u (d_h + 1)), d_h the degree before
    if method == "propagate":
        train = _untrained().setup.dataset.train
        items = recommender.item_map.to_index(history)
        degree = np.bincount(train.items, minlength=len(recommender.item_map))[items] + 1
        by_hand = (partial[old_users + items] / np.sqrt(6.0 * degree)[:, None]).sum(0)
        np.testing.assert_allclose(np.asarray(recommender.user_representations)[user], by_hand, rtol=1e-5, atol=1e-6)


def test_served_calls_see_the_new_state():
    recommender = _untrained()
    history = recommender.item_ids[:5]
    recommender.add_interactions([("newcomer", item) for item in history])
    table = recommender.recommend(["newcomer"], k=10)
    assert len(table) == 10 and not set(table.item_id) & set(history)
    scores = recommender.score(["newcomer"], table.item_id.tolist())
    np.testing.assert_allclose(scores[0], table.score.to_numpy(), rtol=1e-5)
    explained = recommender.explain("newcomer", table.item_id.iloc[0], k=10)
    evidence = explained[explained.kind == "item"]
    assert set(evidence.evidence_id) <= set(history) and len(evidence) == 5
    assert explained.contribution.sum() == pytest.approx(float(scores[0, 0]), rel=1e-4, abs=1e-6)
    assert len(recommender.similar_users(["newcomer"], k=3)) == 3
    assert len(recommender.similar_items(history[:1], k=3)) == 3
    assert recommender.setup.graph.n_node[0] == len(recommender.user_map) + len(recommender.item_map)


@pytest.mark.parametrize("method", ["propagate", "solve"])
def test_a_history_is_ranked_as_the_same_user_folded_in(method):
    history = _untrained().item_ids[3:9]
    anonymous = _untrained().recommend_for_history(history, k=8, method=method)
    assert list(anonymous.columns) == ["rank", "item_id", "score"] and not set(anonymous.item_id) & set(history)
    added = _untrained()
    added.add_interactions([("visitor", item) for item in history], method=method)
    named = added.recommend(["visitor"], k=8)
    assert anonymous.item_id.tolist() == named.item_id.tolist()
    np.testing.assert_allclose(anonymous.score.to_numpy(), named.score.to_numpy(), rtol=1e-5, atol=1e-6)
    seen = _untrained().recommend_for_history(history, k=40, exclude_seen=False)
    assert set(history) <= set(seen.item_id)


def test_a_known_user_is_folded_in_again_and_duplicates_are_ignored():
    recommender = _untrained(**{"data.synthetic.friends_per_user": 3})
    partial = _partial(recommender)
    user_id = recommender.user_ids[4]
    user = int(recommender.user_map.to_index([user_id])[0])
    seen = set(recommender.recommend([user_id], k=40, exclude_seen=False).item_id) - set(
        recommender.recommend([user_id], k=40).item_id
    )
    fresh = [item for item in recommender.item_ids if item not in seen][:2]
    before = np.asarray(recommender.user_representations).copy()
    counts = recommender.add_interactions(
        [(user_id, fresh[0]), (user_id, fresh[1]), (user_id, fresh[1]), (user_id, sorted(seen)[0])]
    )
    assert counts == {"new_users": 0, "new_interactions": 2, "known_interactions": 2}
    after = np.asarray(recommender.user_representations)
    np.testing.assert_allclose(
        after[user], _expected(recommender, partial, len(recommender.user_map), user), rtol=1e-5, atol=1e-6
    )
    others = np.arange(len(after)) != user
    np.testing.assert_array_equal(after[others], before[others])  # the other users are not touched
    assert not set(fresh) & set(recommender.recommend([user_id], k=40).item_id)


def test_refresh_propagates_the_grown_graph_exactly():
    recommender = _untrained()
    recommender.add_interactions([("newcomer", item) for item in recommender.item_ids[:4]])
    recommender.refresh()
    setup = recommender.setup
    exact = np.asarray(node_representations(setup.model, recommender.params, setup.graph))
    np.testing.assert_allclose(
        np.asarray(recommender.user_representations), exact[: len(recommender.user_map)], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(recommender.item_representations), exact[len(recommender.user_map) :], rtol=1e-5, atol=1e-6
    )


def test_models_without_the_formula_propagate_the_grown_graph():
    recommender = _untrained(**{"model.name": "gcn"})
    history = recommender.item_ids[:5]
    recommender.add_interactions([("newcomer", item) for item in history])
    setup = recommender.setup
    exact = np.asarray(node_representations(setup.model, recommender.params, setup.graph))
    np.testing.assert_allclose(
        np.asarray(recommender.user_representations), exact[: len(recommender.user_map)], rtol=1e-5, atol=1e-6
    )
    anonymous = _untrained(**{"model.name": "gcn"}).recommend_for_history(history, k=5)
    assert anonymous.item_id.tolist() == recommender.recommend(["newcomer"], k=5).item_id.tolist()


def test_bad_requests_name_the_fix():
    recommender = _untrained()
    with pytest.raises(UnknownIdError, match="add_items"):
        recommender.add_interactions([("newcomer", "no-such-item")])
    with pytest.raises(DataError, match="user_id"):
        recommender.add_interactions(pd.DataFrame({"user": ["a"], "item_id": [recommender.item_ids[0]]}))
    with pytest.raises(DataError, match="pair"):
        recommender.add_interactions(["just-a-string"])
    with pytest.raises(RequestError, match="method"):
        recommender.add_interactions([("a", recommender.item_ids[0])], method="guess")
    with pytest.raises(RequestError, match="at least one"):
        recommender.recommend_for_history([], k=3)
    assert len(recommender.user_map) == 60  # nothing was added by a refused call
    table = pd.DataFrame({"who": ["a"], "what": [recommender.item_ids[0]]})
    assert recommender.add_interactions(table, user_column="who", item_column="what")["new_users"] == 1


@pytest.mark.parametrize(
    "user, pattern",
    [
        (float("nan"), r"row 0: user id nan is a float"),
        (None, r"row 0: user id None is a NoneType"),
        (["zoe"], r"row 0: user id \['zoe'\] is a list"),
        ("  ", r"row 0: the user id is blank"),
        (7, r"row 0: user id 7 is a int but the model's user ids are strs .*pass str\(7\)"),
        (True, r"is a bool"),
    ],
    ids=["nan", "none", "list", "blank", "int-beside-strings", "bool"],
)
def test_a_user_id_that_is_not_an_id_is_refused(user, pattern):
    recommender = _untrained()
    before = recommender.user_ids
    item = recommender.item_ids[0]
    with pytest.raises(DataError, match=pattern):
        recommender.add_interactions([(user, item)])
    with pytest.raises(DataError, match=r"interactions row 1: .*user id"):  # pandas may hold None as NaN
        recommender.add_interactions(pd.DataFrame({"user_id": ["fine", user], "item_id": [item, item]}))
    assert recommender.user_ids == before  # nothing added by a refused call


def test_an_explicit_solve_on_a_model_without_the_formula_is_refused():
    recommender = _untrained(**{"model.name": "gcn"})
    item = recommender.item_ids[0]
    with pytest.raises(RequestError, match=r"method='solve' .* leave method unset or pass 'propagate'"):
        recommender.add_interactions([("newcomer", item)], method="solve")
    with pytest.raises(RequestError, match=r"method='solve'"):
        recommender.recommend_for_history([item], k=3, method="solve")
    assert recommender.add_interactions([("newcomer", item)], method="propagate")["new_users"] == 1


def test_helpers_grow_a_csr_like_a_rebuild():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, 200), rng.integers(0, 25, 200)
    keys = np.unique(users * 25 + items)
    old = Interactions(keys // 25, keys % 25)
    csr = csr_by_user(old, 30)
    new_users, new_items = np.array([3, 3, 31, 30, 31, 3]), np.array([7, 7, 1, 2, 0, int(csr[1][csr[0][3]])])
    keep = foldin.new_pairs(csr, new_users, new_items)
    assert keep.tolist() == [(3 * 25 + 7) not in set(keys), False, True, True, True, False]
    grown = foldin.csr_with(csr, 32, new_users[keep], new_items[keep])
    rebuilt = csr_by_user(
        Interactions(np.concatenate([old.users, new_users[keep]]), np.concatenate([old.items, new_items[keep]])), 32
    )
    for got, expected in zip(grown, rebuilt, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_a_state_built_in_memory_saves_and_restores(tmp_path):
    recommender = _untrained()
    recommender.add_interactions([("newcomer", item) for item in recommender.item_ids[:3]])
    step = recommender.save(tmp_path / "fresh")
    assert step == 0  # the model's own step in a new workdir
    restored = Recommender.from_checkpoint(tmp_path / "fresh")
    users = recommender.user_ids
    assert restored.recommend(users, k=5).equals(recommender.recommend(users, k=5))


def test_a_run_written_outside_a_job_updates(tmp_path):
    config = _config()
    run = build_run(config)
    write_run(tmp_path / "run", run, epoch=0)
    summary = update_from_workdir(tmp_path / "run", pd.DataFrame({"user_id": ["a"], "item_id": ["item_0001"]}), steps=2)
    assert summary["step"] == 2 and summary["new_users"] == 1 and summary["replayed"] == 1


def test_save_and_restore_serve_the_same_recommendations(trained, workdir_copy, tmp_path):
    recommender = Recommender.from_checkpoint(workdir_copy)
    history = recommender.item_ids[:5]
    recommender.add_interactions([("newcomer", item) for item in history] + [(recommender.user_ids[0], history[0])])
    users = recommender.user_ids
    before = recommender.recommend(users, k=10)
    saved_step = recommender.save(tmp_path / "elsewhere")  # a new workdir
    own_step = recommender.save(workdir_copy)  # the model's own: the next step
    assert own_step > saved_step
    for workdir, step in ((tmp_path / "elsewhere", saved_step), (workdir_copy, own_step)):
        restored = Recommender.from_checkpoint(workdir)  # "best" is the saved state
        assert restored.step == step and "newcomer" in restored.user_ids
        assert restored.recommend(users, k=10).equals(before)
    # fold-ins after a restore continue as in memory (the fold-in state is saved too)
    restored = Recommender.from_checkpoint(tmp_path / "elsewhere")
    more = [("second", item) for item in recommender.item_ids[10:14]]
    recommender.add_interactions(more, method="propagate")
    restored.add_interactions(more, method="propagate")
    np.testing.assert_allclose(
        restored.score(["second"], recommender.item_ids), recommender.score(["second"], recommender.item_ids), rtol=1e-6
    )
    config = trained[0]
    with pytest.raises(ConfigError, match="scripts/update.py"):
        train_and_evaluate(config, workdir_copy)


def test_an_update_grows_the_tables_and_trains(trained, workdir_copy):
    config, _ = trained
    before = Recommender.from_checkpoint(workdir_copy, which="latest")
    known_user, known_items = before.user_ids[1], before.item_ids
    rows = pd.DataFrame(
        {
            "user_id": ["newcomer", "newcomer", "newcomer", known_user, "newcomer"],
            "item_id": [known_items[0], known_items[1], "new-item", "new-item", known_items[0]],
        }
    )
    added = update_from_workdir(workdir_copy, rows, steps=0)
    assert added["new_users"] == 1 and added["new_items"] == 1 and added["new_interactions"] == 4
    assert added["step"] == before.step + 1 and added["loss"] is None
    grown = Recommender.from_checkpoint(workdir_copy)
    old, new = np.asarray(before.params["node_embedding"]), np.asarray(grown.params["node_embedding"])
    users = len(before.user_map)
    assert new.shape == (old.shape[0] + 2, old.shape[1])
    np.testing.assert_array_equal(new[:users], old[:users])  # old rows at their new places
    np.testing.assert_array_equal(new[users + 1 : users + 1 + len(before.item_map)], old[users:])
    assert 0.01 < np.std(new[users]) < 1.0 and 0.01 < np.std(new[-1]) < 1.0  # fresh N(0, init_std) rows
    trained_update = update_from_workdir(
        workdir_copy, pd.DataFrame({"user_id": ["third"], "item_id": ["new-item"]}), steps=6
    )
    assert np.isfinite(trained_update["loss"]) and trained_update["step"] == added["step"] + 6
    latest = Recommender.from_checkpoint(workdir_copy)
    assert latest.step == trained_update["step"] and {"newcomer", "third"} <= set(latest.user_ids)
    assert "new-item" in latest.item_ids and len(latest.recommend(["third"], k=5)) == 5
    with pytest.raises(ConfigError, match="scripts/update.py"):
        train_and_evaluate(config, workdir_copy)


def _script(*args):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "update.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )


def test_the_update_script_trains_and_answers_errors_in_one_line(trained, workdir_copy, tmp_path):
    rows = tmp_path / "new.csv"
    user = Recommender.from_checkpoint(trained[1]).user_ids[0]
    rows.write_text(f"user_id,item_id,rating\nnewcomer,item_0001,5\nnewcomer,item_0002,4\n{user},item_0003,3\n")
    done = _script("--workdir", workdir_copy, "--interactions", rows, "--steps", 3)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["new_users"] == 1 and summary["steps"] == 3
    bad = tmp_path / "bad.csv"
    bad.write_text("person,item_id\nx,item_0001\n")
    for arguments, message in (
        (("--workdir", tmp_path / "nothing", "--interactions", rows), "no checkpoints"),
        (("--workdir", workdir_copy, "--interactions", bad), "no column 'user_id'"),
        (("--workdir", workdir_copy, "--interactions", rows, "--steps", -1), "steps=-1"),
        (("--workdir", workdir_copy, "--interactions", tmp_path / "absent.csv"), "--interactions"),
    ):
        failed = _script(*arguments)
        assert failed.returncode == 2
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], failed.stderr


def test_evaluating_a_saved_fold_in_names_the_training_steps(trained, workdir_copy):
    """A fold-in save serves users the config's data lacks: evaluation names the steps it can evaluate."""
    from graphrec_jax.checkpoint import CheckpointStore
    from graphrec_jax.cli import run_evaluation

    training_steps = CheckpointStore(workdir_copy, read_only=True).steps()
    served = Recommender.from_checkpoint(workdir_copy)
    served.add_interactions([("newcomer", served.item_ids[0])])
    saved = served.save(workdir_copy)
    with pytest.raises(
        DataError, match=rf"step {saved} of .* fold-in save .* --step \(on disk: .*{training_steps[-1]}"
    ):
        run_evaluation(str(workdir_copy))
    assert run_evaluation(str(workdir_copy), step=training_steps[-1])["step"] == training_steps[-1]
