"""Write top-K recommendations with raw ids to a CSV or JSON file.

python scripts/score.py --workdir runs/demo --users user_0001,user_0002 --k 10 --out recs.csv
python scripts/score.py --workdir runs/demo --all-users --k 20 --out recs.json
"""

import argparse

from graphrec_jax.cli import run_scoring
from graphrec_jax.host_memory import use_huge_pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run directory of a training run")
    users = parser.add_mutually_exclusive_group(required=True)
    users.add_argument("--users", help="comma-separated raw user ids")
    users.add_argument("--all-users", action="store_true", help="score every known user")
    parser.add_argument("--k", type=int, default=10, help="recommendations per user")
    parser.add_argument("--out", required=True, help="output file, .csv or .json")
    parser.add_argument("--include-seen", action="store_true", help="also recommend the user's training items")
    parser.add_argument("--which", choices=["best", "latest"], default="best", help="checkpoint to restore")
    args = parser.parse_args()
    run_scoring(
        args.workdir,
        args.out,
        users=None if args.all_users else args.users.split(","),
        k=args.k,
        exclude_seen=not args.include_seen,
        which=args.which,
    )


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
