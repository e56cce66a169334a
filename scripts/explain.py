"""Explain recommendations: the user's history items (and friends) that make an item score as it
does, each with its exact share of the score.

    python scripts/explain.py --workdir runs/demo --user user_0001 --item item_0042
    python scripts/explain.py --workdir runs/demo --user user_0001 --top 5 --out why.json

Prints one sentence per item ("recommended because you interacted with A (0.41), B (0.22);
your friends X (0.10) like it or alike; ..."); `--out` writes the evidence table (.json or
.csv). A user error ends in one line `error: ...` and exit status 2 (`--verbose` shows the
traceback).
"""

import argparse

from graphrec_jax.cli import run_explain, run_script
from graphrec_jax.host_memory import use_huge_pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run directory of a training run")
    parser.add_argument("--user", required=True, help="raw user id")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--item", help="raw item id to explain")
    target.add_argument("--top", type=int, help="explain the user's top K recommendations")
    parser.add_argument("--evidence", type=int, default=5, help="neighbours listed per item")
    parser.add_argument("--out", help="write the evidence table to this .json or .csv file")
    parser.add_argument("--which", choices=["best", "latest"], default="best", help="checkpoint to restore")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of a user error")
    args = parser.parse_args()
    run_script(
        lambda: run_explain(
            args.workdir,
            args.user,
            item=args.item,
            top=args.top,
            evidence=args.evidence,
            out=args.out,
            which=args.which,
        ),
        verbose=args.verbose,
    )


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
