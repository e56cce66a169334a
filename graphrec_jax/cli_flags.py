"""Command-line flags parsed the way `cli.run_script` answers: absl's parser, with every bad flag
in one line.

`absl.app.run` prints a flag error as a "FATAL Flags parsing error" and exits 1, and a
`--config.KEY=VALUE` override of a key the config lacks ends in a traceback; a script that passes
`absl_flags_parser(...)` as `app.run(main, flags_parser=...)` gets one line `error: ...` and exit
status 2 instead, and `--help` exits 0.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from graphrec_jax.cli import fail

_HELP_FLAGS = {"h": True, "?": True, "help": True, "helpshort": True, "helpfull": False}  # name: short help


def absl_flags_parser(
    usage: str, *, required: Sequence[str] = (), config_files: Sequence[str] = ()
) -> Callable[[list[str]], list[str]]:
    """A `flags_parser` for `absl.app.run(main, flags_parser=...)` that answers as `run_script` does.

    `--help`/`-h` (and `--helpfull`) print the help and exit 0. A missing `required` flag, an
    unknown flag, a bad value, a missing config file, a `--config.KEY=VALUE` override of a key
    the config lacks (with ml_collections' "did you mean" hint) or a stray argument ends in one
    line `error: <message>` and exit status 2; `usage` (the command's shape, such as
    "python scripts/train.py --config CONFIG --workdir DIR") completes the message of a missing
    flag or a stray argument; `config_files` names the `config_flags.DEFINE_config_file` flags.
    `--verbose` (or `GRAPHREC_VERBOSE=1`) shows the traceback.
    """

    def parse(argv: list[str]) -> list[str]:
        return parse_absl_flags(argv, usage=usage, required=required, config_files=config_files)

    return parse


def parse_absl_flags(
    argv: list[str], *, usage: str, required: Sequence[str] = (), config_files: Sequence[str] = ()
) -> list[str]:
    """Parses `argv` into absl's `flags.FLAGS` and returns `[program]`; see `absl_flags_parser`."""
    from absl import app, flags

    arguments = list(argv[1 : argv.index("--")] if "--" in argv else argv[1:])
    names = [argument.split("=", 1)[0].lstrip("-") for argument in arguments if argument.startswith("-")]
    verbose = "verbose" in names or os.environ.get("GRAPHREC_VERBOSE", "") not in ("", "0")
    for name in names:
        if name in _HELP_FLAGS:
            app.usage(shorthelp=_HELP_FLAGS[name], writeto_stdout=True)
            sys.exit(0)
    if "flagfile" not in names:  # a flag file may hold the required flags
        missing = [name for name in required if name not in names]
        if missing:
            fail(_required_message(missing, usage))
    for name in config_files:  # before parsing, which defers a missing file to the first read
        _check_config_file(name, _value_of(arguments, name))
    try:
        remaining = flags.FLAGS(argv)
    except flags.UnrecognizedFlagError as error:
        suggested = re.search(r"Did you mean: (.+?) \?$", str(error))  # absl keeps them only in its message
        suggestions = suggested.group(1).split(", ") if suggested else []
        hint = (
            f"did you mean {' or '.join('--' + name for name in suggestions)}?"
            if suggestions
            else "--help lists the flags"
        )
        fail(f"unknown flag --{error.flagname}; {hint}", verbose=verbose)
    except flags.Error as error:
        fail(_flag_error_message(str(error)), verbose=verbose)
    except (KeyError, AttributeError) as error:
        message = _override_error_message(error, arguments)
        if message is None:
            raise
        fail(message, verbose=verbose)
    except OSError as error:
        fail(str(error).strip().splitlines()[-1], verbose=verbose)
    missing = [name for name in required if flags.FLAGS[name].value in (None, "")]
    if missing:
        fail(_required_message(missing, usage))
    if len(remaining) > 1:
        fail(f"unexpected arguments {' '.join(remaining[1:])!r}: {usage}")
    return remaining[:1]


def _required_message(missing: Sequence[str], usage: str) -> str:
    listed = " and ".join(f"--{name}" for name in missing)
    return f"{listed} {'is' if len(missing) == 1 else 'are'} required: {usage}"


def _value_of(arguments: Sequence[str], name: str) -> str | None:
    """The value `arguments` give the flag `name` (`--name=V` or `--name V`), the last one wins."""
    value = None
    for index, argument in enumerate(arguments):
        flag, equals, text = argument.lstrip("-").partition("=")
        if argument.startswith("-") and flag == name:
            value = text if equals else (arguments[index + 1] if index + 1 < len(arguments) else None)
    return value


def _check_config_file(name: str, value: str | None) -> None:
    if not value:
        return
    path = Path(value.split(":", 1)[0])  # FILE:ARGUMENT passes ARGUMENT to get_config
    if not path.exists():
        fail(f"config file {path} not found; pass --{name} a Python file with get_config(), such as configs/demo.py")
    if not path.is_file():
        fail(f"--{name} {path} is not a file; pass a Python file with get_config(), such as configs/demo.py")


def _flag_error_message(message: str) -> str:
    """absl's message for a bad flag, the way a person reads it."""
    message = re.sub(r"^flag (--\S+?): ", r"\1: ", message.strip())
    message = re.sub(r"invalid literal for int\(\) with base 10: (.+)$", r"\1 is not an integer", message)
    message = re.sub(r"could not convert string to float: (.+)$", r"\1 is not a number", message)
    if "Error whilst parsing config file" in message:  # get_config() raised: its last line says why
        message = f"{message.split(':', 1)[0]}: get_config() failed: {message.strip().splitlines()[-1]}"
    return message


def _override_error_message(error: BaseException, arguments: Sequence[str]) -> str | None:
    """The message for a `--config.KEY=VALUE` override of a key the config lacks (ml_collections
    raises a KeyError or AttributeError whose text is "'KEY'\\nDid you mean ...?"), or None."""
    while isinstance(error, BaseException) and error.args:  # an AttributeError wraps the KeyError
        error = error.args[0]
    text = str(error)
    key, _, hint = text.partition("\n")
    key = key.strip("'\"")
    for argument in arguments:
        flag = argument.split("=", 1)[0]
        match = re.fullmatch(r"--?(?:no)?(\w+)\.([\w.]+)", flag)
        if not match or key not in match.group(2).split("."):
            continue
        parents = match.group(2).split(".")
        parent = ".".join([match.group(1), *parents[: parents.index(key)]])
        message = f"{flag}: {parent} has no key {key!r}"
        hint = hint.strip()
        return f"{message}; {hint[0].lower()}{hint[1:]}" if hint else message
    return None
