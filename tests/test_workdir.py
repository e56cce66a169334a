"""End to end: train, checkpoint, restore, score; resume, crash, corruption, divergence."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from configs import test as test_config
from graphrec_jax.checkpoint import CheckpointStore, CheckpointWarning
from graphrec_jax.data.errors import DataError
from graphrec_jax.data.types import UnknownIdError
from graphrec_jax.serving.recommender import Recommender
from graphrec_jax.training.hooks import NonFiniteLossError
from graphrec_jax.training.workdir import train_and_evaluate
from tests.helpers import REPO_ROOT

TIMING_KEYS = ("epoch_seconds", "eval_seconds")


def _comparable(record: dict) -> dict:
    return {key: value for key, value in record.items() if not key.endswith(TIMING_KEYS)}


def _records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = test_config.get_config()
    metrics = train_and_evaluate(config, workdir)
    return config, workdir, metrics


def test_training_logs_checkpoints_and_learns(trained):
    config, workdir, metrics = trained
    records = _records(workdir)
    assert [record["epoch"] for record in records] == [2, 4]
    for key in ("epoch", "step", "loss", "test/recall@10", "test/ndcg@10", "test/coverage@10"):
        assert key in records[-1]
    assert records[-1]["loss"] < records[0]["loss"]
    assert metrics["step"] == records[-1]["step"]
    # 40 items with ~2 held out per user: random top-10 recall is about 10/33; learning beats it
    assert metrics["test/recall@10"] > 0.35
    store = CheckpointStore(workdir, read_only=True)
    assert store.steps()[-1] == records[-1]["step"]
    assert (workdir / "config.json").exists()


def test_recommender_serves_raw_ids(trained):
    config, workdir, _ = trained
    recommender = Recommender.from_checkpoint(workdir)
    users = recommender.user_ids[:2]
    assert all(isinstance(user, str) for user in users)
    table = recommender.recommend(users, k=5)
    assert list(table.columns) == ["user_id", "rank", "item_id", "score"]
    assert len(table) == 10
    for user, rows in table.groupby("user_id"):
        assert rows["score"].is_monotonic_decreasing
        seen = set(
            recommender.setup.dataset.train.items[
                recommender.setup.dataset.train.users == recommender.user_map.to_index([user])[0]
            ]
        )
        assert not seen & set(recommender.item_map.to_index(list(rows["item_id"])))
    with_seen = recommender.recommend(users[:1], k=len(recommender.item_ids), exclude_seen=False)
    assert len(with_seen) == len(recommender.item_ids)
    scores = recommender.score(users, recommender.item_ids[:3])
    assert scores.shape == (2, 3)
    top = table[table.user_id == users[0]].iloc[0]
    assert recommender.score([users[0]], [top.item_id])[0, 0] == pytest.approx(top.score, rel=1e-5)
    candidates = recommender.item_ids[:4]
    limited = recommender.recommend(users[:1], k=10, candidates=candidates)
    assert set(limited.item_id) <= set(candidates)
    similar = recommender.similar_items(recommender.item_ids[:2], k=3)
    assert len(similar) == 6 and not (similar.item_id == similar.similar_item_id).any()
    with pytest.raises(UnknownIdError, match="unknown user id 'nobody'"):
        recommender.recommend(["nobody"])


def test_rerun_on_finished_workdir_trains_nothing_more(trained):
    config, workdir, metrics = trained
    again = train_and_evaluate(config, workdir)
    assert _comparable(again) == _comparable(metrics)
    assert len(_records(workdir)) == 2


def test_resume_with_more_epochs_equals_one_long_run(trained, tmp_path):
    config, workdir, _ = trained
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    longer = test_config.get_config()
    longer.train.num_epochs = 6
    resumed_metrics = train_and_evaluate(longer, resumed)
    straight_metrics = train_and_evaluate(longer, tmp_path / "straight")
    assert _comparable(resumed_metrics) == _comparable(straight_metrics)


def test_corrupt_latest_checkpoint_falls_back_to_previous(trained, tmp_path):
    _, workdir, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    store = CheckpointStore(copy, read_only=True)
    latest, previous = store.steps()[-1], store.steps()[-2]
    state_files = [path for path in (copy / "checkpoints" / str(latest) / "state").rglob("*") if path.is_file()]
    for path in state_files:
        if path.stat().st_size > 64:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step, _, _, _ = CheckpointStore(copy, read_only=True).restore(None, None)
    assert step == previous
    assert any(issubclass(warning.category, CheckpointWarning) for warning in caught)


def _truncate_state(workdir: Path, step: int) -> None:
    for path in (workdir / "checkpoints" / str(step) / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 64:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_corrupt_best_checkpoint_falls_back_to_another(trained, tmp_path):
    _, workdir, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    store = CheckpointStore(copy, read_only=True)
    best = store.best_step()
    assert best is not None and len(store.steps()) >= 2
    _truncate_state(copy, best)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        served = Recommender.from_checkpoint(copy)  # which="best"
    assert served.step != best and served.step in store.steps()
    assert any(issubclass(warning.category, CheckpointWarning) for warning in caught)


def test_an_empty_step_folder_is_passed_over(trained, tmp_path):
    """An interrupted copy can leave `checkpoints/99/` empty: serving and evaluation use the others."""
    _, workdir, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    expected = Recommender.from_checkpoint(workdir)
    (copy / "checkpoints" / "99").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        served = Recommender.from_checkpoint(copy)
        latest = Recommender.from_checkpoint(copy, which="latest")
    assert served.step == expected.step
    assert latest.step == CheckpointStore(workdir, read_only=True).steps()[-1]


def test_divergence_stops_with_clear_error_and_keeps_good_checkpoint(tmp_path):
    exploding = test_config.get_config()
    exploding.train.learning_rate = 1e30
    exploding.train.log_every_steps = 1  # every loss is checked before the step's save
    exploding.train.checkpoint_every_steps = 1
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step (\d+).*new --workdir") as raised:
        train_and_evaluate(exploding, tmp_path)
    bad_step = int(re.search(r"at step (\d+)", str(raised.value)).group(1))
    steps = CheckpointStore(tmp_path, read_only=True).steps()
    assert steps and steps[-1] == bad_step - 1  # the last step whose loss was finite, not the bad one
    step, _, _, _ = CheckpointStore(tmp_path, read_only=True).restore(None, None)
    assert step == bad_step - 1


def test_bad_input_fails_before_writing_anything(tmp_path):
    bad = tmp_path / "ratings.csv"
    bad.write_text("user_id,item_id\nu1,i1\nu2\n")
    config = test_config.get_config()
    config.data.format = "csv"
    config.data.path = str(bad)
    workdir = tmp_path / "never"
    with pytest.raises(DataError):
        train_and_evaluate(config, workdir)
    assert not workdir.exists()


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_uninterrupted_metrics(tmp_path):
    overrides = [
        "--config.train.num_epochs=24",
        "--config.train.eval_every_epochs=8",
        "--config.train.checkpoint_every_steps=5",
        "--config.train.batch_size=32",
        "--show_users=0",
    ]

    def command(workdir):
        return [
            sys.executable,
            str(REPO_ROOT / "scripts" / "train.py"),
            f"--config={REPO_ROOT / 'configs' / 'test.py'}",
            f"--workdir={workdir}",
            *overrides,
        ]

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    straight = tmp_path / "straight"
    subprocess.run(command(straight), env=env, check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    checkpoints = killed / "checkpoints"
    while time.time() < deadline:
        steps = [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()] if checkpoints.exists() else []
        if steps and max(steps) >= 40:
            break
        if process.poll() is not None:
            pytest.fail("the run ended before it could be killed; lengthen it")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    records_before = _records(killed) if (killed / "metrics.jsonl").exists() else []
    assert len(records_before) < 3, "the kill came after the run had finished"

    subprocess.run(command(killed), env=env, check=True, capture_output=True, timeout=600)
    assert _comparable(_records(killed)[-1]) == _comparable(_records(straight)[-1])
    assert [r["epoch"] for r in _records(killed)] == [8, 16, 24]
    np.testing.assert_allclose(_records(killed)[-1]["test/recall@10"], _records(straight)[-1]["test/recall@10"])


def test_init_from_copies_another_runs_best_parameters(trained):
    from graphrec_jax.data.prepare import prepare_dataset
    from graphrec_jax.models.setup import build_setup, init_params
    from graphrec_jax.training.run import initial_params_from

    config, workdir, _ = trained
    setup = build_setup(config, prepare_dataset(config.data))
    fresh = init_params(setup, seed=123)
    copied = initial_params_from(workdir, fresh)
    best = Recommender.from_checkpoint(workdir).params
    np.testing.assert_array_equal(copied["node_embedding"], np.asarray(best["node_embedding"]))
    bigger = test_config.get_config()
    bigger.model.embedding_dim = 32
    other = init_params(build_setup(bigger, prepare_dataset(bigger.data)), seed=0)
    with pytest.raises(ValueError, match="node_embedding"):
        initial_params_from(workdir, other)


def test_a_run_resumed_inside_an_epoch_logs_that_epochs_loss_over_all_its_steps(tmp_path):
    # Checkpoints inside epochs; resuming from one (its later checkpoints and records gone, as
    # after a crash) must log the same records, the epoch's mean loss included, as a straight run.
    config = test_config.get_config()
    config.train.num_epochs, config.train.eval_every_epochs = 3, 1
    config.train.keep_checkpoints = 20
    straight = tmp_path / "straight"
    train_and_evaluate(config, straight)
    per_epoch = _records(straight)[0]["step"]
    assert per_epoch > 2
    config.train.checkpoint_every_steps = per_epoch + 1  # lands inside the second epoch
    stopped = tmp_path / "stopped"
    train_and_evaluate(config, stopped)
    store = CheckpointStore(stopped, read_only=True)
    inside = [step for step in store.steps() if step % per_epoch]
    assert inside and inside[0] == per_epoch + 1
    for step in store.steps():
        if step > inside[0]:
            shutil.rmtree(stopped / "checkpoints" / str(step))
    store.close()
    kept = [record for record in _records(stopped) if record["step"] <= inside[0]]
    (stopped / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in kept))
    train_and_evaluate(config, stopped)
    assert [_comparable(record) for record in _records(stopped)] == [
        _comparable(record) for record in _records(straight)
    ]


def test_files_written_atomically_get_the_usual_permissions(tmp_path):
    """A file written through a temporary one is not left private to its owner (mkstemp's 0600):
    a new file gets 0666 less the umask, a replaced one keeps its mode."""
    from graphrec_jax.files import write_atomic

    previous = os.umask(0o027)
    try:
        fresh = write_atomic(tmp_path / "fresh.json", "{}")
        assert fresh.stat().st_mode & 0o777 == 0o640
        kept = tmp_path / "kept.json"
        kept.write_text("old")
        kept.chmod(0o604)
        write_atomic(kept, "new")
        assert kept.stat().st_mode & 0o777 == 0o604 and kept.read_text() == "new"
    finally:
        os.umask(previous)
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]  # no temporary left


def test_the_best_checkpoint_survives_a_resume_and_a_save(tmp_path):
    """Orbax's best-N policy knows only the metrics its own manager saved: a resumed run or a
    `Recommender.save` would otherwise delete the best checkpoint of the run before it."""
    config = test_config.get_config()
    config.train.num_epochs, config.train.eval_every_epochs, config.train.keep_checkpoints = 3, 1, 1
    workdir = tmp_path / "run"
    train_and_evaluate(config, workdir)
    longer = test_config.get_config()
    longer.train.num_epochs, longer.train.eval_every_epochs, longer.train.keep_checkpoints = 6, 1, 1
    train_and_evaluate(longer, workdir)
    records = _records(workdir)
    metric = f"test/{longer.eval.best_metric}@{longer.eval.k}"  # the test config validates on its test split
    best = max(records, key=lambda record: (record[metric], -record["step"]))["step"]
    store = CheckpointStore(workdir, read_only=True)
    assert best in store.steps() and store.best_step() == best
    served = Recommender.from_checkpoint(workdir, which="latest")
    served.add_interactions([("newcomer", served.item_ids[0])])
    for _ in range(2):  # keep 1: each save would drop every older step but the best
        saved = served.save(workdir)
    steps = CheckpointStore(workdir, read_only=True).steps()
    assert best in steps and saved in steps and len(steps) == 2
