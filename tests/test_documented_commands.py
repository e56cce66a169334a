"""Every command line the README, docs/ and the docstrings of scripts/, bench/ and configs/ show
for scripts/ and bench/ names a script that exists and flags that script accepts, and every
`--config.KEY=VALUE` names a key of the config file the command passes: a copied command must
not fail on a renamed flag or key."""

from __future__ import annotations

import ast
import re
import runpy
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.helpers import config_has_key

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# `python scripts/x.py ...`, `.venv/bin/python bench/y.py ...`, after an optional VAR=value prefix
COMMAND = re.compile(r"(?:^|\s)\S*python3?\s+((?:scripts|bench)/\w+\.py)\b(.*)")


def commands_in(block: str) -> list[tuple[str, str]]:
    """(script, arguments) of each command line of a block of shell lines."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0]  # a trailing comment
        match = COMMAND.search(line)
        if match:
            commands.append((match.group(1), match.group(2)))
    return commands


def documented_commands(text: str) -> list[tuple[str, str]]:
    """(script, arguments) of each command line inside the Markdown text's fenced code blocks."""
    return [command for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S) for command in commands_in(block)]


def docstring_commands(path: Path) -> list[tuple[str, str]]:
    """(script, arguments) of each command line in a Python file's module docstring."""
    return commands_in(ast.get_docstring(ast.parse(path.read_text())) or "")


def flags_of(arguments: str) -> list[str]:
    """The `--flag` names of an argument string (`--a=1 [--b 2] "$(...)"` -> `--a`, `--b`)."""
    try:
        tokens = shlex.split(arguments.replace("[", " ").replace("]", " "))
    except ValueError:  # an unbalanced quote inside a shell substitution
        tokens = arguments.split()
    return [token.split("=", 1)[0] for token in tokens if token.startswith("--") and len(token) > 2]


def config_file_of(arguments: str) -> str | None:
    match = re.search(r"--config[ =](\S+\.py)", arguments)
    return match.group(1) if match else None


@cache
def help_text(script: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / script), "--help"], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    # absl's --help exits with status 1 after printing the flags
    assert result.returncode == 0 or "--helpfull" in result.stdout, f"{script} --help failed:\n{result.stderr[-2000:]}"
    return result.stdout + result.stderr


@cache
def load_config(config_file: str):
    return runpy.run_path(str(REPO / config_file))["get_config"]()


SOURCES = sorted(path for folder in ("scripts", "bench", "configs") for path in (REPO / folder).glob("*.py"))
ALL = [
    (document, script, arguments)
    for document in DOCUMENTS
    for script, arguments in documented_commands(document.read_text())
] + [(source, script, arguments) for source in SOURCES for script, arguments in docstring_commands(source)]


def test_the_documents_show_commands():
    scripts = {script for _, script, _ in ALL}
    assert {"scripts/train.py", "scripts/score.py", "bench/lightgcn.py", "bench/social.py"} <= scripts
    assert docstring_commands(REPO / "scripts" / "train.py")[0][0] == "scripts/train.py"


def test_parsing_of_documented_commands():
    text = "```sh\nA=1 .venv/bin/python bench/x.py --out f.json \\\n    --seeds 3 [--prefetch 0]  # note\n```\n"
    ((script, arguments),) = documented_commands(text)
    assert script == "bench/x.py"
    assert flags_of(arguments) == ["--out", "--seeds", "--prefetch"]
    assert config_file_of("--config configs/a.py --config.x=1") == "configs/a.py"


@pytest.mark.parametrize("script", sorted({script for _, script, _ in ALL}))
def test_documented_flags_exist(script):
    assert (REPO / script).is_file(), f"the docs run {script}, which does not exist"
    usage = help_text(script)
    missing = []
    for document, name, arguments in ALL:
        if name != script:
            continue
        for flag in flags_of(arguments):
            if flag.startswith("--config."):
                continue  # checked against the config file below
            bare = flag[2:]
            # the whole flag: `--out` is not accepted because the usage lists `--out-dir`
            if not re.search(rf"--(?:\[no\])?{re.escape(bare)}(?![\w-])", usage):
                missing.append(f"{document.relative_to(REPO)}: {script} {flag}")
    assert not missing, "documented flags the script does not accept:\n" + "\n".join(missing)


def test_documented_config_overrides_name_keys():
    missing = []
    for document, _, arguments in ALL:
        overrides = [flag[len("--config.") :] for flag in flags_of(arguments) if flag.startswith("--config.")]
        config_file = config_file_of(arguments)
        if not overrides or config_file is None:
            continue
        config = load_config(config_file)
        missing += [
            f"{document.relative_to(REPO)}: {config_file} has no {key}"
            for key in overrides
            if not config_has_key(config, key)
        ]
    assert not missing, "documented --config overrides of keys that do not exist:\n" + "\n".join(missing)
