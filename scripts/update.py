"""Incremental training: new interactions into a trained workdir, without retraining from scratch.

    python scripts/update.py --workdir runs/demo --interactions new.csv --steps 800
    python scripts/update.py --workdir runs/demo --interactions new.csv --steps 800 --replay 2

Restores the workdir's latest checkpoint, adds the rows of --interactions (a csv/tsv/parquet file
with the training data's column names: data.user_column, data.item_column, ...) to the graph, with
fresh embedding rows for new users and items, trains --steps steps on the new rows plus --replay
old rows per new row, and writes a new checkpoint step in the same workdir (nothing is overwritten).
`scripts/score.py --workdir DIR` then serves the updated model. Prints a JSON summary last.

A user error (no checkpoint, a missing column, a model updates do not support) ends in one line
`error: ...` and exit status 2 (`--verbose` shows the traceback).
"""

import argparse

from graphrec_jax.cli import run_script, run_update
from graphrec_jax.host_memory import use_huge_pages
from graphrec_jax.training.update import DEFAULT_REPLAY, DEFAULT_STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run directory of a training run")
    parser.add_argument("--interactions", required=True, help="new interactions: a .csv, .tsv or .parquet file")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps (0: add the rows only)")
    parser.add_argument("--replay", type=float, default=DEFAULT_REPLAY, help="old interactions replayed per new one")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of a user error")
    args = parser.parse_args()
    run_script(
        lambda: run_update(args.workdir, args.interactions, steps=args.steps, replay=args.replay),
        verbose=args.verbose,
    )


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
