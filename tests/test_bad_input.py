"""Bad input of every kind, tried as a hostile user would: each ends in one error that names the
file and line (or the key, or the id), and nothing is written to the workdir.

Readers and config go through `train_and_evaluate`, checkpoints and serving through the
`Recommender` and the scripts. Every case writes its own tiny input under tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs import test as test_config
from graphrec_jax.checkpoint import CheckpointError
from graphrec_jax.config import ConfigError
from graphrec_jax.data.errors import DataError
from graphrec_jax.data.types import UnknownIdError
from graphrec_jax.serving.recommender import Recommender, RequestError
from graphrec_jax.training.workdir import train_and_evaluate
from tests.helpers import REPO_ROOT, override

GOOD_ROWS = "".join(
    f"u{user},i{(user * 3 + k) % 9},{1 + k % 5},{1000 + user * 10 + k}\n" for user in range(8) for k in range(4)
)
HEADER = "user_id,item_id,rating,timestamp\n"


def _csv(tmp_path: Path, body: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(body.encode("utf-8") if isinstance(body, str) else body)
    return path


def _config(**overrides):
    return override(test_config.get_config(), **overrides)


def _table_config(path: Path, **overrides):
    return _config(**{"data.format": path.suffix.lstrip(".") or "csv", "data.path": str(path), **overrides})


def _expect(error_type, pattern: str, config, tmp_path: Path) -> None:
    """Training with `config` raises `error_type` matching `pattern`, and writes nothing."""
    workdir = tmp_path / "workdir"
    with pytest.raises(error_type, match=pattern) as raised:
        train_and_evaluate(config, workdir)
    assert "\n" not in str(raised.value).strip(), "the message must be one line"
    assert not workdir.exists(), f"{workdir} was written before the error"


# ------------------------------------------------------------------------------------- readers

READER_CASES = {
    "missing file": (None, DataError, r"nowhere\.csv does not exist"),
    "empty file": ("", DataError, r"data\.csv is empty"),
    "header only": (HEADER, DataError, r"data\.csv has a header but no rows"),
    "missing item column": ("user_id,item\n1,2\n", DataError, r"data\.csv has no column 'item_id'"),
    "empty id": (HEADER + GOOD_ROWS + "u1,,3,5\n", DataError, r"data\.csv, line 34, column 'item_id'"),
    "extra field in a row": (HEADER + GOOD_ROWS + "u1,i2,3,5,7\n", DataError, r"data\.csv, line 34"),
    "rating not a number": (HEADER + GOOD_ROWS + "u1,i2,high,5\n", DataError, r"line 34, column 'rating'"),
    "timestamp not a time": (HEADER + GOOD_ROWS + "u1,i2,3,soon\n", DataError, r"line 34, column 'timestamp'"),
    "timestamp beyond int64": (HEADER + GOOD_ROWS + "u1,i2,3,1e30\n", DataError, r"line 34, column 'timestamp'"),
    "bytes that are not UTF-8": (
        (HEADER + GOOD_ROWS).encode() + b"u\xff1,i2,3,5\n",
        DataError,
        r"data\.csv, line 34: byte 0xff",
    ),
}


@pytest.mark.parametrize("case", sorted(READER_CASES))
def test_table_reader_errors(tmp_path, case):
    body, error_type, pattern = READER_CASES[case]
    path = tmp_path / "nowhere.csv" if body is None else _csv(tmp_path, body)
    _expect(error_type, pattern, _table_config(path, **{"data.split.method": "leave_one_out"}), tmp_path)


@pytest.mark.parametrize("bad", [3.5, 1e19, -1e19], ids=["fractional", "beyond int64", "below int64"])
def test_parquet_float_ids_that_are_not_int64(tmp_path, bad):
    path = tmp_path / "data.parquet"
    users = [float(user) for user in range(12)] + [bad]
    pd.DataFrame({"user_id": users, "item_id": [user % 5 for user in range(13)]}).to_parquet(path)
    _expect(DataError, r"data\.parquet, row 13, column 'user_id'", _table_config(path), tmp_path)


def test_parquet_with_list_valued_ids(tmp_path):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"user_id": [[1, 2], [3]], "item_id": [1, 2]}).to_parquet(path)
    _expect(DataError, r"data\.parquet.*'user_id'", _table_config(path), tmp_path)


def test_a_file_that_is_not_parquet(tmp_path):
    path = _csv(tmp_path, HEADER + GOOD_ROWS, "data.parquet")
    _expect(DataError, r"data\.parquet is not a readable parquet file", _table_config(path), tmp_path)


def test_lightgcn_file_with_a_word(tmp_path):
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "train.txt").write_text("0 1 2\n1 2 x3\n")
    (tmp_path / "split" / "test.txt").write_text("0 3\n")
    config = _config(
        **{"data.format": "lightgcn", "data.path": str(tmp_path / "split"), "data.split.method": "predefined"}
    )
    _expect(DataError, r"train\.txt, line 2: token 'x3'", config, tmp_path)


def test_lightgcn_split_folder_missing(tmp_path):
    config = _config(
        **{"data.format": "lightgcn", "data.path": str(tmp_path / "gone"), "data.split.method": "predefined"}
    )
    _expect(DataError, r"gone does not exist", config, tmp_path)


def test_movielens_folder_without_ratings(tmp_path):
    (tmp_path / "ml").mkdir()
    config = _config(**{"data.format": "movielens", "data.path": str(tmp_path / "ml")})
    _expect(DataError, r"ml/u\.data", config, tmp_path)


def test_social_link_to_an_unknown_user(tmp_path):
    data = _csv(tmp_path, HEADER + GOOD_ROWS)
    links = _csv(tmp_path, "user,friend\nu1,u2\nu3,stranger\n", "links.csv")
    config = _table_config(data, **{"data.social.path": str(links), "data.split.method": "leave_one_out"})
    _expect(DataError, r"links\.csv, line 3.*'stranger'", config, tmp_path)


def test_social_links_without_the_friend_column(tmp_path):
    data = _csv(tmp_path, HEADER + GOOD_ROWS)
    links = _csv(tmp_path, "user,buddy\nu1,u2\n", "links.csv")
    config = _table_config(data, **{"data.social.path": str(links), "data.split.method": "leave_one_out"})
    _expect(DataError, r"links\.csv.*'friend'", config, tmp_path)


def test_sociallgn_folder_without_trust(tmp_path):
    folder = tmp_path / "social"
    folder.mkdir()
    (folder / "train_set.txt").write_text("user,item\n0,1\n1,2\n")
    (folder / "test_set.txt").write_text("user,item\n0,2\n")
    config = _config(**{"data.format": "sociallgn", "data.path": str(folder), "data.split.method": "predefined"})
    _expect(DataError, r"trust\.txt", config, tmp_path)


def test_rating_threshold_that_removes_everything(tmp_path):
    config = _table_config(_csv(tmp_path, HEADER + GOOD_ROWS), **{"data.rating_threshold": 99.0})
    _expect(DataError, r"data\.rating_threshold=99\.0 removes every interaction", config, tmp_path)


def test_a_user_with_every_item_is_named_by_raw_id(tmp_path):
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "train.txt").write_text("0 0 1\n1 1 2\n7 0 1 2\n")
    (tmp_path / "split" / "test.txt").write_text("0 2\n1 0\n")
    config = _config(
        **{"data.format": "lightgcn", "data.path": str(tmp_path / "split"), "data.split.method": "predefined"}
    )
    _expect(DataError, r"user 7 has a training interaction with every item", config, tmp_path)


# --------------------------------------------------------------------------------------- config

CONFIG_CASES = {
    "unknown format": ({"data.format": "excel"}, r"data\.format='excel'"),
    "test ratio of 1": ({"data.split.test_ratio": 1.0}, r"data\.split\.test_ratio=1\.0"),
    "unknown loss": ({"train.loss": "hinge"}, r"train\.loss='hinge'"),
    "negative batch size": ({"train.batch_size": -64}, r"train\.batch_size=-64"),
    "text fusion without an encoder": (
        {"model.fusion": "concat"},
        r"model\.fusion='concat' needs model\.text\.encoder",
    ),
    "fanouts not numbers": ({"sampling.mode": "sampled", "sampling.fanouts": "a,b"}, r"sampling\.fanouts='a,b'"),
    "fanouts against layers": ({"sampling.mode": "sampled", "sampling.fanouts": "3"}, r"sampling\.fanouts='3'"),
    "extra cut-offs": ({"eval.extra_k": "5,0"}, r"eval\.extra_k='5,0'"),
    "a number as text": ({"model.embedding_dim": "sixteen"}, r"model\.embedding_dim='sixteen' must be a number"),
    "unknown backend": ({"model.aggregation": "segment_sum"}, r"model\.aggregation='segment_sum'"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_errors_name_the_key(tmp_path, case):
    overrides, pattern = CONFIG_CASES[case]
    _expect(ConfigError, pattern, _config(**overrides), tmp_path)


def test_unknown_users_policy(tmp_path):
    config = _table_config(_csv(tmp_path, HEADER + GOOD_ROWS), **{"data.social.unknown_users": "ignore"})
    _expect(DataError, r"data\.social\.unknown_users='ignore'", config, tmp_path)


def test_init_from_a_workdir_without_checkpoints(tmp_path):
    _expect(
        ConfigError, r"train\.init_from=.*holds no checkpoints", _config(**{"train.init_from": str(tmp_path)}), tmp_path
    )


def test_validation_split_that_does_not_exist(tmp_path):
    _expect(ValueError, r"eval\.validation_split='nope'", _config(**{"eval.validation_split": "nope"}), tmp_path)


# ---------------------------------------------------------------------------- resume and checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trained")
    config = test_config.get_config()
    config.train.num_epochs = 2
    train_and_evaluate(config, workdir)
    return config, workdir


def _snapshot(workdir: Path) -> dict:
    return {str(path.relative_to(workdir)): path.stat().st_mtime_ns for path in workdir.rglob("*") if path.is_file()}


def test_resuming_with_a_changed_config_names_each_key(trained, tmp_path):
    config, original = trained
    workdir = tmp_path / "copy"
    shutil.copytree(original, workdir)
    before = _snapshot(workdir)
    changed = test_config.get_config()
    changed.train.num_epochs = 4  # allowed
    changed.train.learning_rate = 0.5
    changed.seed = 3
    with pytest.raises(ConfigError, match=r"seed was 0, is 3; train\.learning_rate was 0\.01, is 0\.5") as raised:
        train_and_evaluate(changed, workdir)
    assert "train.num_epochs" not in str(raised.value) and "new --workdir" in str(raised.value)
    assert _snapshot(workdir) == before


def test_a_cut_short_metrics_line_is_dropped_on_resume(trained, tmp_path):
    config, original = trained
    workdir = tmp_path / "copy"
    shutil.copytree(original, workdir)
    with open(workdir / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 3, "st')
    longer = test_config.get_config()
    longer.train.num_epochs = 4
    with pytest.warns(RuntimeWarning, match="cut short"):
        metrics = train_and_evaluate(longer, workdir)
    assert metrics["epoch"] == 4
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [2, 4]


def test_no_checkpoint_to_serve(tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoints in .*empty"):
        Recommender.from_checkpoint(tmp_path / "empty")


def _edit_metadata(workdir: Path, edit) -> None:
    for path in (workdir / "checkpoints").glob("*/metadata/metadata"):
        metadata = json.loads(path.read_text())
        edit(metadata)
        path.write_text(json.dumps(metadata))


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda m: m["config"]["model"].update(embedding_dim=32), r"node_embedding has shape \(\d+, 16\)"),
        (lambda m: m["config"]["model"].update(fusion="nonsense"), r"model\.fusion='nonsense'"),
        (lambda m: m["id_maps"]["item"]["raw_ids"].pop(), r"train_items must be indices in \[0, 39\)"),
    ],
    ids=["dimension", "fusion", "id map"],
)
def test_a_checkpoint_with_edited_metadata_is_refused_by_name(trained, tmp_path, edit, pattern):
    _, original = trained
    workdir = tmp_path / "copy"
    shutil.copytree(original, workdir)
    _edit_metadata(workdir, edit)
    with pytest.raises(CheckpointError, match=r"checkpoints/\d+ does not describe a model.*" + pattern):
        Recommender.from_checkpoint(workdir)


# -------------------------------------------------------------------------------------- serving


@pytest.fixture(scope="module")
def recommender(trained):
    return Recommender.from_checkpoint(trained[1])


@pytest.mark.parametrize("k", [0, -3, 2.5, "5", True])
def test_k_must_be_a_positive_integer(recommender, k):
    user = recommender.user_ids[0]
    with pytest.raises(RequestError, match=r"k=.* must be a positive integer"):
        recommender.recommend([user], k=k)
    with pytest.raises(RequestError, match=r"k=.* must be a positive integer"):
        recommender.similar_items(recommender.item_ids[:1], k=k)


def test_unknown_user_is_named(recommender):
    with pytest.raises(UnknownIdError, match=r"unknown user id 'mallory'"):
        recommender.recommend(["mallory"])


def test_no_users_give_an_empty_table(recommender):
    table = recommender.recommend([], k=5)
    assert table.empty and list(table.columns) == ["user_id", "rank", "item_id", "score"]


def test_ids_come_in_any_ordered_container(recommender):
    users = recommender.user_ids[:3]
    expected = recommender.recommend(users, k=4)
    for container in (tuple(users), np.array(users, dtype=object), pd.Series(users), pd.Index(users), iter(users)):
        pd.testing.assert_frame_equal(recommender.recommend(container, k=4), expected)
    np.testing.assert_array_equal(
        recommender.score(pd.Series(users), pd.Series(recommender.item_ids[:3])),
        recommender.score(users, recommender.item_ids[:3]),
    )
    with pytest.raises(RequestError, match=r"ids given as a set have no order; pass a list"):
        recommender.recommend(set(users), k=4)
    with pytest.raises(RequestError, match=r"one-dimensional"):
        recommender.recommend(np.array([users]), k=4)


def test_options_that_take_a_flag_refuse_other_values(recommender):
    with pytest.raises(RequestError, match=r"exclude_seen='no' must be True or False"):
        recommender.recommend(recommender.user_ids[:1], k=3, exclude_seen="no")


def test_explain_takes_one_pair_and_names_the_call_for_many(recommender):
    user, item = recommender.user_ids[0], recommender.item_ids[0]
    with pytest.raises(RequestError, match=r"explain takes one user_id, got a list: use explain_pairs"):
        recommender.explain([user], [item])
    with pytest.raises(RequestError, match=r"once per user"):
        recommender.explain_recommendations([user, recommender.user_ids[1]], k=2)


@pytest.mark.parametrize("step", ["12", True, 1.0, -1])
def test_a_checkpoint_step_must_be_a_whole_number(trained, step):
    with pytest.raises(RequestError, match=r"step=.* must be a checkpoint step"):
        Recommender.from_checkpoint(trained[1], step=step)


def test_the_checkpoint_folder_instead_of_the_workdir_names_the_workdir(trained):
    workdir = trained[1]
    step = next(path for path in (workdir / "checkpoints").iterdir() if path.name.isdigit())
    for wrong in (workdir / "checkpoints", step):
        with pytest.raises(
            CheckpointError, match=rf"inside a run's checkpoint folder; pass the run's workdir, {workdir}$"
        ):
            Recommender.from_checkpoint(wrong)
    with pytest.raises(RequestError, match=r"workdir=None must be the path"):
        Recommender.from_checkpoint(None)


def test_saving_over_a_file_is_refused(recommender, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    with pytest.raises(RequestError, match=r"is a file; pass a directory"):
        recommender.save(target)
    with pytest.raises(RequestError, match=r"workdir=None must be a directory path"):
        recommender.save(None)
    assert target.read_text() == "keep me"


def _script(name: str, *arguments: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), GRAPHREC_HUGEPAGES="0")
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / name), *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_scripts_answer_user_errors_in_one_line(trained, tmp_path):
    _, workdir = trained
    cases = [
        (("score.py", "--workdir", str(workdir), "--users", "mallory", "--out", str(tmp_path / "r.csv")), "mallory"),
        (("score.py", "--workdir", str(workdir), "--all-users", "--k", "0", "--out", str(tmp_path / "r.csv")), "--k=0"),
        (("score.py", "--workdir", str(workdir), "--all-users", "--out", str(tmp_path / "r.txt")), "r.txt"),
        (("score.py", "--workdir", str(workdir), "--users-file", str(tmp_path / "no.txt"), "--out", "x.csv"), "no.txt"),
        (("evaluate.py", "--workdir", str(tmp_path / "nothing")), "no checkpoints"),
        (
            (
                "train.py",
                f"--config={REPO_ROOT / 'configs' / 'test.py'}",
                f"--workdir={tmp_path / 'w'}",
                "--config.train.loss=hinge",
            ),
            "train.loss='hinge'",
        ),
    ]
    for arguments, expected in cases:
        result = _script(*arguments)
        assert result.returncode == 2, (arguments, result.stderr[-1500:])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines[-1].startswith("error: ") and expected in lines[-1], (arguments, lines[-3:])
        assert "Traceback" not in result.stderr, arguments
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "w").exists()
    verbose = _script("evaluate.py", "--workdir", str(tmp_path / "nothing"), "--verbose")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr


def test_score_reads_ids_with_commas_from_a_file(trained, tmp_path):
    _, workdir = trained
    users = Recommender.from_checkpoint(workdir).user_ids[:2]
    (tmp_path / "users.txt").write_text("\n".join(users) + "\n\n")
    result = _script(
        "score.py",
        "--workdir",
        str(workdir),
        "--users-file",
        str(tmp_path / "users.txt"),
        "--k",
        "3",
        "--out",
        str(tmp_path / "recs.csv"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_csv(tmp_path / "recs.csv")
    assert table.user_id.unique().tolist() == users and len(table) == 6
    assert not list(tmp_path.glob(".recs.csv*"))  # no temporary file left behind
    np.testing.assert_array_equal(table.groupby("user_id")["rank"].max().to_numpy(), [3, 3])
