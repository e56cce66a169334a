"""Write top-K recommendations with raw ids to a CSV or JSON file (written atomically).

python scripts/score.py --workdir runs/demo --users user_0001,user_0002 --k 10 --out recs.csv
python scripts/score.py --workdir runs/demo --users-file users.txt --k 10 --out recs.csv   # one id per line
python scripts/score.py --workdir runs/demo --all-users --k 20 --out recs.json
python scripts/score.py --workdir runs/demo --all-users --k 20 --diversity 0.3 --method dpp --out recs.csv

--diversity D (0..1) re-ranks each user's top --pool items (default max(4k, 50)) for relevance and
diversity with --method mmr|dpp, comparing items by --diversify-by auto|categories|text|representation;
--window W limits each DPP pick to the previous W - 1 picks. --diversity 0 (the default) is the plain top-K.

A user error (an unknown user id, a bad --k) ends in one line `error: ...` and exit status 2
(`--verbose` shows the traceback).
"""

import argparse

from graphrec_jax.cli import read_user_ids, run_scoring, run_script, split_user_ids
from graphrec_jax.host_memory import use_huge_pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run directory of a training run")
    users = parser.add_mutually_exclusive_group(required=True)
    users.add_argument("--users", help="comma-separated raw user ids (spaces around each id are dropped)")
    users.add_argument("--users-file", help="a text file with one raw user id per line (ids may hold commas)")
    users.add_argument("--all-users", action="store_true", help="score every known user")
    parser.add_argument("--k", type=int, default=10, help="recommendations per user")
    parser.add_argument("--out", required=True, help="output file, .csv or .json")
    parser.add_argument("--include-seen", action="store_true", help="also recommend the user's training items")
    parser.add_argument("--which", choices=["best", "latest"], default="best", help="checkpoint to restore")
    parser.add_argument("--diversity", type=float, default=0.0, help="0..1: re-rank for diversity (0: off)")
    parser.add_argument("--method", choices=["mmr", "dpp"], default="mmr", help="re-ranker for --diversity")
    parser.add_argument("--pool", type=int, default=None, help="items re-ranked per user (default max(4k, 50))")
    parser.add_argument(
        "--diversify-by",
        choices=["auto", "categories", "text", "representation"],
        default="auto",
        help="item similarity for re-ranking (auto: categories, else text, else representations)",
    )
    parser.add_argument("--window", type=int, default=None, help="DPP only: compare each pick with the last W-1")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of a user error")
    args = parser.parse_args()

    def score():
        if args.all_users:
            user_ids = None
        elif args.users_file:
            user_ids = read_user_ids(args.users_file)
        else:
            user_ids = split_user_ids(args.users)
        run_scoring(
            args.workdir,
            args.out,
            users=user_ids,
            k=args.k,
            exclude_seen=not args.include_seen,
            which=args.which,
            diversity=args.diversity,
            method=args.method,
            pool=args.pool,
            diversify_by=args.diversify_by,
            window=args.window,
        )

    run_script(score, verbose=args.verbose)


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
