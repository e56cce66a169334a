"""What the scripts in `scripts/` do, as functions: train, evaluate, score.

Each prints for a person at a terminal; the Python API underneath is
`training.workdir.train_and_evaluate`, `serving.recommender.Recommender` and
`serving.evaluation.evaluate_model`. `run_script` gives every script the same answer to a user
error: one line, `error: <message>`, on stderr and exit status 2 (`--verbose` or
`GRAPHREC_VERBOSE=1` shows the traceback); an unexpected exception keeps its traceback.
`cli_flags.absl_flags_parser` gives a script that parses absl flags the same answer for bad flags.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from graphrec_jax import devices

EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 128 + signal.SIGTERM  # what a scheduler expects of a job it sent SIGTERM


class UsageError(ValueError):
    """A command-line argument a script cannot use: a missing flag, a count below its minimum."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a script reports in one line: bad config, data, ids, checkpoints, requests."""
    from graphrec_jax.checkpoint import CheckpointError
    from graphrec_jax.config import ConfigError
    from graphrec_jax.data.errors import DataError
    from graphrec_jax.data.types import UnknownIdError
    from graphrec_jax.serving.recommender import RequestError
    from graphrec_jax.text.pretraining import PretrainingError
    from graphrec_jax.training.hooks import NonFiniteLossError

    return (
        ConfigError,
        DataError,
        UnknownIdError,
        CheckpointError,
        RequestError,
        NonFiniteLossError,
        PretrainingError,
        UsageError,
        devices.DistributedSetupError,
        FileNotFoundError,
    )


def run_script(main: Callable[[], object], *, verbose: bool = False) -> None:
    """Runs a script's `main()` and exits: 0 when it returns, 2 with `error: <message>` for a user
    error, 143 after a preemption's checkpoint, 130 on Ctrl-C; other exceptions propagate."""
    from graphrec_jax.training.hooks import Preempted

    verbose = verbose or os.environ.get("GRAPHREC_VERBOSE", "") not in ("", "0")
    try:
        main()
    except Preempted as error:
        print(f"preempted: {error}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except user_errors() as error:
        fail(" ".join(str(error).split()) or type(error).__name__, verbose=verbose)
    sys.exit(0)


def fail(message: str, *, verbose: bool = False) -> None:
    """Prints `error: <message>` on one line (after the traceback being handled, if `verbose`)
    and exits with status 2."""
    if verbose:
        traceback.print_exc()
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Orbax reports routine events (read-only opens, async saves) as absl warnings.
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def run_training(
    config,
    workdir: str,
    *,
    show_users: int = 3,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> dict:
    """Trains with `config` in `workdir`, prints the final metrics and a few users' top-10.

    In a multi-process run every process restores the model for the top-10 (a restore is a
    collective), process 0 prints, and every process leaves the distributed runtime before it
    returns, so none is left waiting for another. A negative `show_users` raises before anything
    is written, as `train_and_evaluate` does for a bad config or a workdir that is a file.
    """
    if show_users < 0:
        raise UsageError(f"--show_users={show_users} must be >= 0")
    _setup_logging()
    devices.initialize_distributed(coordinator_address, num_processes, process_id)
    try:
        from graphrec_jax.training.workdir import train_and_evaluate

        metrics = train_and_evaluate(config, workdir)
        primary = devices.is_primary_process()
        if primary:
            print(json.dumps({key: value for key, value in metrics.items() if not key.endswith("seconds")}))
        if show_users > 0:
            from graphrec_jax.serving.recommender import Recommender

            recommender = Recommender.from_checkpoint(workdir)
            if primary:
                print(format_recommendations(recommender, recommender.user_ids[:show_users], k=10))
        return metrics
    finally:
        # JAX's preemption service keeps a SIGTERM handler of its own: give SIGTERM back its
        # default action, so that a process can always be stopped.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        devices.shutdown_distributed()


def format_recommendations(recommender, user_ids: Sequence, k: int = 10) -> str:
    """A readable block of each user's top-`k` with item titles."""
    table = recommender.recommend(list(user_ids), k=k)
    lines = []
    for user_id, rows in table.groupby("user_id", sort=False):
        lines.append(f"Top {k} for user {user_id}:")
        for row in rows.itertuples():
            lines.append(f"  {row.rank:2d}. {recommender.title(row.item_id)}  [{row.item_id}]  score {row.score:.3f}")
    return "\n".join(lines)


def run_evaluation(
    workdir: str,
    *,
    which: str = "best",
    step: int | None = None,
    out: str | None = None,
    beyond_accuracy: bool = False,
) -> dict:
    """Restores a checkpoint, re-reads its dataset, evaluates every split; prints JSON last (and
    writes it to `out` when given, atomically). `beyond_accuracy` adds ILD, category ILD and
    coverage, catalogue coverage, novelty and Gini (`serving.beyond_accuracy`); a metric with
    nothing to average over is null."""
    _setup_logging()
    from graphrec_jax.config import cutoffs
    from graphrec_jax.data.prepare import prepare_dataset
    from graphrec_jax.files import write_atomic
    from graphrec_jax.models.setup import build_setup
    from graphrec_jax.serving.evaluation import evaluate_model
    from graphrec_jax.serving.recommender import Recommender

    recommender = Recommender.from_checkpoint(workdir, which=which, step=step)
    config = recommender.config
    dataset = prepare_dataset(config.data)
    _check_same_data(dataset, recommender, workdir)
    setup = build_setup(config, dataset, text_features=recommender.setup.text_features)
    metrics = evaluate_model(
        setup,
        recommender.params,
        ks=cutoffs(config),
        chunk_size=config.eval.user_chunk_size,
        backend=config.model.aggregation,
        representations=np.concatenate([recommender.user_representations, recommender.item_representations]),
        beyond_accuracy=beyond_accuracy,
    )
    metrics = {"step": recommender.step, **{key: _finite_or_none(value) for key, value in metrics.items()}}
    if out:
        write_atomic(out, json.dumps(metrics, indent=1))
    print(json.dumps(metrics))
    return metrics


def _finite_or_none(value):
    """NaN (a metric with nothing to average over) as None, so the JSON stays standard."""
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _check_same_data(dataset, recommender, workdir: str) -> None:
    from graphrec_jax.data.errors import DataError

    same = (
        dataset.num_users == len(recommender.user_map)
        and dataset.num_items == len(recommender.item_map)
        and len(dataset.train) == len(recommender.setup.dataset.train)
    )
    if same:
        return
    data = recommender.config.data
    source = (
        "the config's synthetic catalogue" if data.format == "synthetic" else f"the data at data.path={data.path!r}"
    )
    served = (
        f"({len(recommender.user_map)} users, {len(recommender.item_map)} items, "
        f"{len(recommender.setup.dataset.train)} training interactions)"
    )
    if (getattr(recommender, "_checkpoint_metadata", None) or {}).get("dynamic"):
        from graphrec_jax.checkpoint import CheckpointStore

        steps = [step for step in CheckpointStore(workdir, read_only=True).steps() if step != recommender.step]
        raise DataError(
            f"step {recommender.step} of {workdir} was written by a fold-in save or scripts/update.py: it serves "
            f"data that {source} lacks {served}, so that data cannot evaluate it; evaluate a training step with "
            f"--step (on disk: {', '.join(map(str, steps)) or 'none'}), or retrain on the grown data"
        )
    raise DataError(f"{source} no longer matches the data the model in {workdir} was trained on {served}")


def split_user_ids(text: str) -> list[str]:
    """The ids of a `--users u1,u2` argument, each stripped of surrounding spaces; raises
    `UsageError` when it lists none."""
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise UsageError(f"--users {text!r} lists no user ids; pass comma-separated ids, such as --users u1,u2")
    return ids


def read_user_ids(path: str) -> list[str]:
    """One raw user id per line (blank lines skipped; ids may hold commas and spaces)."""
    from graphrec_jax.data.errors import DataError
    from graphrec_jax.data.readers import decode_text, require_file

    file = require_file(Path(path), "users file", "pass --users-file a text file with one user id per line")
    ids = [line.strip() for line in decode_text(file).splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path} holds no user ids; expected one per line")
    return ids


def run_scoring(
    workdir: str,
    out: str,
    *,
    users: Sequence[str] | None,
    k: int = 10,
    exclude_seen: bool = True,
    which: str = "best",
    diversity: float = 0.0,
    method: str = "mmr",
    pool: int | None = None,
    diversify_by: str = "auto",
    window: int | None = None,
) -> None:
    """Writes top-`k` recommendations for `users` (None: all users) to `out` (.csv or .json),
    atomically; `diversity`, `method`, `pool`, `diversify_by` and `window` re-rank as
    `Recommender.recommend` does."""
    _setup_logging()
    from graphrec_jax.files import write_atomic
    from graphrec_jax.serving.recommender import Recommender, RequestError, check_k

    path = Path(out)
    if path.suffix.lower() not in (".csv", ".json"):
        raise RequestError(f"--out {out}: the file must end in .csv or .json")
    check_k(k, "--k")
    if pool is not None:
        check_k(pool, "--pool")
    recommender = Recommender.from_checkpoint(workdir, which=which)
    if users is None:
        user_ids = recommender.user_ids
    else:
        user_ids = [_match_id(user, recommender.user_map) for user in users]
    table = recommender.recommend(
        user_ids,
        k=k,
        exclude_seen=exclude_seen,
        diversity=diversity,
        method=method,
        pool=pool,
        diversify_by=diversify_by,
        window=window,
    )
    if path.suffix.lower() == ".csv":
        write_atomic(path, table.to_csv(index=False))
    else:
        payload = {
            str(user_id): [{"item_id": _plain(row.item_id), "score": row.score} for row in rows.itertuples()]
            for user_id, rows in table.groupby("user_id", sort=False)
        }
        write_atomic(path, json.dumps(payload, indent=1))
    print(f"wrote {len(table)} recommendations for {len(user_ids)} users to {path}", file=sys.stderr)


def _match_id(text: str, id_map):
    """Command-line ids arrive as text; match an integer id when the map holds integers."""
    if text in id_map:
        return text
    try:
        number = int(text)
    except ValueError:
        return text
    return number if number in id_map else text


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def run_explain(
    workdir: str,
    user: str,
    *,
    item: str | None = None,
    top: int | None = None,
    evidence: int = 5,
    out: str | None = None,
    which: str = "best",
) -> str:
    """Explains one recommendation (`item`) or a user's `top` recommendations; prints readable
    evidence and writes the table to `out` (.json or .csv, atomically) when given."""
    _setup_logging()
    from graphrec_jax.files import write_atomic
    from graphrec_jax.serving.recommender import Recommender, RequestError

    if (item is None) == (top is None):
        raise RequestError("pass --item ID to explain one item, or --top K to explain the user's top K")
    if out and Path(out).suffix.lower() not in (".csv", ".json"):
        raise RequestError(f"--out {out}: the file must end in .csv or .json")
    recommender = Recommender.from_checkpoint(workdir, which=which)
    user_id = _match_id(user, recommender.user_map)
    if item is not None:
        table = recommender.explain(user_id, _match_id(item, recommender.item_map), k=evidence)
    else:
        table = recommender.explain_recommendations(user_id, k=top, evidence=evidence)
    text = describe_explanations(recommender, table)
    print(text)
    if out:
        if Path(out).suffix.lower() == ".csv":
            write_atomic(out, table.to_csv(index=False))
        else:
            records = [{key: _plain(value) for key, value in row.items()} for row in table.to_dict("records")]
            write_atomic(out, json.dumps(records, indent=1, default=str))
    return text


def describe_explanations(recommender, table) -> str:
    """One sentence per explained item: "ITEM (score 0.93): you interacted with A (0.41), B
    (0.22); your friends X (0.10) interacted with it or alike; your own taste 0.15; the rest 0.05"."""
    lines = []
    for item_id, rows in table.groupby("item_id", sort=False):
        score = rows.score.iloc[0]
        parts = []
        items = rows[rows.kind == "item"]
        friends = rows[rows.kind == "friend"]
        if len(items):
            listed = ", ".join(f"{row.title} ({row.contribution:.2f})" for row in items.itertuples())
            parts.append(f"you interacted with {listed}")
        if len(friends):
            listed = ", ".join(f"{row.title} ({row.contribution:.2f})" for row in friends.itertuples())
            parts.append(f"your friends {listed} like it or alike")
        for kind, words in (("own", "your own taste"), ("remainder", "the rest"), ("text", "its text")):
            for row in rows[rows.kind == kind].itertuples():
                parts.append(f"{words} {row.contribution:.2f}")
        head = f"{recommender.title(item_id)} [{item_id}] (score {score:.2f})"
        rank = f"{int(rows['rank'].iloc[0])}. " if "rank" in rows else ""
        lines.append(f"{rank}{head}: recommended because " + "; ".join(parts))
    return "\n".join(lines)


def run_update(workdir: str, interactions: str, *, steps: int, replay: float) -> dict:
    """Trains a workdir's latest checkpoint on new interactions (`training.update.update_from_workdir`),
    writes the result as a new checkpoint step there, and prints a JSON summary last."""
    if not Path(interactions).is_file():
        raise UsageError(
            f"--interactions {interactions} is not a file; pass a CSV, TSV or Parquet table with columns "
            "user_id,item_id (one new interaction a row)"
        )
    _setup_logging()
    from graphrec_jax.training.update import update_from_workdir

    summary = update_from_workdir(workdir, interactions, steps=steps, replay=replay)
    print(json.dumps(summary))
    return summary
