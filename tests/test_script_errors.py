"""Mistakes on a script's command line, as a person makes them: a missing or mistyped flag, a
config file or key that does not exist, a value out of range, a workdir that is a file. Each ends
in one line `error: ...` that names the fix, with exit status 2, before anything is written;
`--help` exits 0. Nothing here trains: every script stops before its first step."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

import pytest

from configs import test as test_config
from graphrec_jax.cli import UsageError, split_user_ids
from graphrec_jax.config import ConfigError, validate_config
from tests.helpers import REPO_ROOT, override, subprocess_environment

USAGE = "python scripts/train.py --config CONFIG --workdir DIR"


def _script(name: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / name), *arguments],
        env=subprocess_environment(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_line(result: subprocess.CompletedProcess) -> str:
    """The one stderr line of a script that stopped on a user error (exit status 2)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), lines[-5:]
    return lines[0]


# ------------------------------------------------------------------------------------ train.py

TRAIN_CASES = {
    "config file missing": (["--config", "configs/nope.py"], ["config file configs/nope.py not found", "--config"]),
    "config is a folder": (["--config", "configs"], ["--config configs is not a file"]),
    "mistyped section": (["--config.modle.name=x"], ["--config.modle.name", "no key 'modle'", 'did you mean "model"']),
    "mistyped key": (["--config.model.nmae=x"], ["config.model has no key 'nmae'", 'did you mean "name"']),
    "unknown section": (["--config.nope.key=1"], ["--config.nope.key: config has no key 'nope'"]),
    "unknown flag": (["--bogus"], ["unknown flag --bogus", "--help"]),
    "mistyped flag": (["--show_user=1"], ["unknown flag --show_user; did you mean --show_users?"]),
    "not an integer": (["--config.train.num_epochs=abc"], ["--config.train.num_epochs=abc", "not an integer"]),
    "nan learning rate": (["--config.train.learning_rate=nan"], ["train.learning_rate=nan must be a finite number"]),
    "infinite weight": (["--config.train.l2_weight=inf"], ["train.l2_weight=inf must be a finite number"]),
    "negative show_users": (["--show_users=-1"], ["--show_users=-1"]),
    "stray argument": (["extra"], ["unexpected arguments 'extra'", USAGE]),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_refuses_in_one_line(tmp_path, case):
    arguments, expected = TRAIN_CASES[case]
    workdir = tmp_path / "run"
    if not any(argument.startswith("--config=") or argument == "--config" for argument in arguments):
        arguments = ["--config", "configs/test.py", *arguments]
    line = _error_line(_script("train.py", *arguments, "--workdir", str(workdir)))
    for words in expected:
        assert words in line, line
    assert not workdir.exists()


@pytest.mark.parametrize(
    "arguments, missing",
    [
        (["--config", "configs/test.py"], "--workdir is required"),
        (["--workdir", "WORKDIR"], "--config is required"),
        (["--workdir=", "--config", "configs/test.py"], "--workdir is required"),
        ([], "--config and --workdir are required"),
    ],
)
def test_train_names_a_missing_flag_and_the_command(tmp_path, arguments, missing):
    workdir = tmp_path / "run"
    arguments = [str(workdir) if argument == "WORKDIR" else argument for argument in arguments]
    line = _error_line(_script("train.py", *arguments))
    assert line == f"error: {missing}: {USAGE}"
    assert not workdir.exists()


def test_train_refuses_a_workdir_that_is_a_file(tmp_path):
    file = tmp_path / "notes.txt"
    file.write_text("keep me\n")
    line = _error_line(_script("train.py", "--config", "configs/test.py", "--workdir", str(file)))
    assert line == f"error: --workdir {file} is a file; pass a directory"
    line = _error_line(_script("train.py", "--config", "configs/test.py", "--workdir", str(file / "run")))
    assert line == f"error: --workdir {file / 'run'}: {file} is a file; pass a directory"
    assert file.read_text() == "keep me\n"


@pytest.mark.parametrize("flag", ["--help", "-h", "--helpfull"])
def test_train_help_exits_0(flag):
    result = _script("train.py", flag)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--workdir" in result.stdout and "--config" in result.stdout and "--show_users" in result.stdout


def test_train_verbose_shows_the_traceback(tmp_path):
    result = _script(
        "train.py",
        "--config",
        "configs/test.py",
        "--workdir",
        str(tmp_path / "run"),
        "--config.modle.name=x",
        "--verbose",
    )
    assert result.returncode == 2 and "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --config.modle.name")


def test_non_finite_config_values_are_named():
    """In the API too: `train_and_evaluate` validates before it writes anything."""
    validate_config(test_config.get_config())
    with pytest.raises(ConfigError, match=r"^model\.text\.semantic_weight=nan must be a finite number$"):
        validate_config(override(test_config.get_config(), **{"model.text.semantic_weight": float("nan")}))
    with pytest.raises(ConfigError, match=r"^train\.learning_rate=-inf"):
        validate_config(override(test_config.get_config(), **{"train.learning_rate": float("-inf")}))


def test_a_workdir_under_a_file_is_refused_by_the_api_too(tmp_path):
    from graphrec_jax.files import file_in_the_way
    from graphrec_jax.training.workdir import train_and_evaluate

    assert file_in_the_way(tmp_path) is None  # an existing folder
    assert file_in_the_way(tmp_path / "new" / "run") is None  # folders still to be made
    (tmp_path / "file").write_text("")
    assert file_in_the_way(tmp_path / "file" / "run") == tmp_path / "file"
    with pytest.raises(ConfigError, match="is a file; pass a directory"):
        train_and_evaluate(test_config.get_config(), tmp_path / "file" / "run")
    assert (tmp_path / "file").read_text() == ""


# ---------------------------------------------------------------------------- pretrain_text.py


def _pretrain_script():
    spec = importlib.util.spec_from_file_location("pretrain_text_script", REPO_ROOT / "scripts" / "pretrain_text.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretrain_text_refuses_negative_steps_before_any_work(tmp_path):
    output = tmp_path / "out"
    result = _script(
        "pretrain_text.py",
        *("--encoder", str(tmp_path / "no-encoder"), "--texts-file", str(tmp_path / "no-texts.txt")),
        *("--output", str(output), "--steps", "-1"),
    )
    assert _error_line(result) == "error: --steps=-1 must be >= 1"
    assert not output.exists()


def test_pretrain_text_answers_what_it_finds_after_reading_in_one_line(tiny_bert, tmp_path):
    """A length past the encoder's positions is known only once the encoder is read; a texts file
    with no text only once it is read: both still end in one line."""
    texts = tmp_path / "texts.txt"
    texts.write_text("a red stapler\nblue ink\n")
    output = tmp_path / "out"
    common = ("--encoder", tiny_bert, "--output", str(output), "--steps", "1")
    line = _error_line(_script("pretrain_text.py", *common, "--texts-file", str(texts), "--max-length", "100000"))
    assert "max_length=100000 exceeds the encoder's max_position_embeddings" in line and "or less" in line
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n")
    line = _error_line(_script("pretrain_text.py", *common, "--texts-file", str(blank)))
    assert line == "error: pretrain_mlm needs at least one non-empty text"
    assert not output.exists()


def test_an_item_text_file_that_is_not_json_is_a_data_error(tmp_path):
    from graphrec_jax.data.errors import DataError
    from graphrec_jax.text.item_text import read_amazon_item_records

    broken = tmp_path / "Shop.item.json"
    broken.write_text('{"i1": {"title": "x"')
    with pytest.raises(DataError, match=r"Shop\.item\.json is not a JSON file"):
        read_amazon_item_records(tmp_path)
    broken.write_text("[1, 2]")
    with pytest.raises(DataError, match=r"expected a JSON object"):
        read_amazon_item_records(tmp_path, "Shop")


PRETRAIN_DEFAULTS = dict(
    steps=10, batch_size=32, learning_rate=5e-5, mask_probability=0.15, max_length=128, seed=0, log_every=10
)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("steps", 0, "--steps=0 must be >= 1"),
        ("batch_size", 0, "--batch-size=0 must be >= 1"),
        ("max_length", -5, "--max-length=-5 must be >= 1"),
        ("log_every", 0, "--log-every=0 must be >= 1"),
        ("seed", -1, "--seed=-1 must be >= 0"),
        ("learning_rate", float("nan"), "--learning-rate=nan must be a finite number > 0"),
        ("learning_rate", 0.0, "--learning-rate=0.0 must be a finite number > 0"),
        ("mask_probability", 1.0, r"--mask-probability=1.0 must lie in (0, 1)"),
    ],
)
def test_pretrain_text_checks_every_number(key, value, message):
    script = _pretrain_script()
    script.check_arguments(argparse.Namespace(**PRETRAIN_DEFAULTS))
    with pytest.raises(UsageError) as raised:
        script.check_arguments(argparse.Namespace(**{**PRETRAIN_DEFAULTS, key: value}))
    assert str(raised.value) == message


# ------------------------------------------------------------------------------------ score.py


@pytest.mark.parametrize("users", ["", " , ,"])
def test_score_refuses_users_that_list_no_id(tmp_path, users):
    out = tmp_path / "recs.csv"
    result = _script("score.py", "--workdir", str(tmp_path / "none"), "--users", users, "--out", str(out))
    line = _error_line(result)
    assert "--users" in line and "lists no user ids" in line
    assert not out.exists()


def test_score_strips_spaces_around_each_user_id():
    assert split_user_ids("u1, u2 ,u3,") == ["u1", "u2", "u3"]
    assert split_user_ids("a b") == ["a b"]  # spaces inside an id stay
    with pytest.raises(UsageError, match="lists no user ids"):
        split_user_ids(" ")
