"""Restore a trained model and evaluate it on its dataset's held-out splits.

    python scripts/evaluate.py --workdir runs/demo [--which best|latest] [--step N]

The last line printed is the metrics as JSON.
"""

import argparse

from graphrec_jax.cli import run_evaluation
from graphrec_jax.host_memory import use_huge_pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run directory of a training run")
    parser.add_argument("--which", choices=["best", "latest"], default="best", help="checkpoint to restore")
    parser.add_argument("--step", type=int, default=None, help="a specific checkpoint step (overrides --which)")
    args = parser.parse_args()
    run_evaluation(args.workdir, which=args.which, step=args.step)


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
