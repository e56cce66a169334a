"""Restore a trained model and evaluate it on its dataset's held-out splits.

    python scripts/evaluate.py --workdir runs/demo [--which best|latest] [--step N] [--out metrics.json]
    python scripts/evaluate.py --workdir runs/demo --beyond-accuracy

The last line printed is the metrics as JSON. --beyond-accuracy adds, per split and cut-off K,
ild@K (cosine distance of item representations), ild_category@K and category_coverage@K (where
the data has item categories or tags), coverage@K, novelty@K and gini@K. A user error (a missing workdir, data that no
longer matches the model) ends in one line `error: ...` and exit status 2 (`--verbose` shows
the traceback).
"""

import argparse

from graphrec_jax.cli import run_evaluation, run_script
from graphrec_jax.host_memory import use_huge_pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run directory of a training run")
    parser.add_argument("--which", choices=["best", "latest"], default="best", help="checkpoint to restore")
    parser.add_argument("--step", type=int, default=None, help="a specific checkpoint step (overrides --which)")
    parser.add_argument("--out", default=None, help="also write the metrics to this JSON file (atomically)")
    parser.add_argument(
        "--beyond-accuracy", action="store_true", help="also report diversity, coverage, novelty and Gini"
    )
    parser.add_argument("--verbose", action="store_true", help="show the traceback of a user error")
    args = parser.parse_args()
    run_script(
        lambda: run_evaluation(
            args.workdir, which=args.which, step=args.step, out=args.out, beyond_accuracy=args.beyond_accuracy
        ),
        verbose=args.verbose,
    )


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
