"""Domain-adaptive masked-LM pretraining of the BERT text tower on a catalogue's item text.

    python scripts/pretrain_text.py --encoder /path/to/all-MiniLM-L6-v2 \
        --data-format amazon --data-path ../shared/datasets/amazon-office-text \
        --text-fields title,brand,categories,description --output runs/office-minilm --steps 1000

The output directory is a Hugging Face checkpoint: pass it as `model.text.encoder`.
`--texts-file FILE` (one text per line) replaces `--data-format/--data-path`.
A user error (a bad number, a missing file) ends in one line `error: ...` and exit status 2
(`--verbose` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import math

from graphrec_jax.cli import UsageError, run_script
from graphrec_jax.host_memory import use_huge_pages
from graphrec_jax.text.item_text import amazon_item_texts, parse_fields, read_texts_file
from graphrec_jax.text.pretraining import pretrain_mlm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", required=True, help="BERT checkpoint directory (or hub name)")
    parser.add_argument("--data-format", default="amazon", choices=["amazon"])
    parser.add_argument("--data-path", help="folder holding NAME.item.json")
    parser.add_argument("--data-name", default="", help="file stem, e.g. Office; empty: the only *.item.json")
    parser.add_argument("--texts-file", help="one text per line, instead of --data-path")
    parser.add_argument("--text-fields", default="title,brand,categories,description")
    parser.add_argument("--output", required=True, help="directory for the adapted checkpoint")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--mask-probability", type=float, default=0.15)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--verbose", action="store_true", help="show the traceback of a user error")
    args = parser.parse_args()
    if not (args.texts_file or args.data_path):
        parser.error("pass --data-path (with --data-format amazon) or --texts-file")
    run_script(lambda: pretrain(args), verbose=args.verbose)


def check_arguments(args) -> None:
    """Raises `UsageError` naming the first numeric argument out of its range, before any work."""
    counts = {"--steps": args.steps, "--batch-size": args.batch_size, "--max-length": args.max_length}
    for flag, value in {**counts, "--log-every": args.log_every}.items():
        if value < 1:
            raise UsageError(f"{flag}={value} must be >= 1")
    if args.seed < 0:
        raise UsageError(f"--seed={args.seed} must be >= 0")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise UsageError(f"--learning-rate={args.learning_rate} must be a finite number > 0")
    if not 0.0 < args.mask_probability < 1.0:
        raise UsageError(f"--mask-probability={args.mask_probability} must lie in (0, 1)")


def pretrain(args) -> None:
    check_arguments(args)
    if args.texts_file:
        texts = read_texts_file(args.texts_file)
    else:
        texts = amazon_item_texts(args.data_path, parse_fields(args.text_fields), args.data_name)
    result = pretrain_mlm(
        args.encoder,
        texts,
        args.output,
        num_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        mask_probability=args.mask_probability,
        max_length=args.max_length,
        seed=args.seed,
        log_every=args.log_every,
    )
    print(json.dumps({key: value for key, value in result.items() if key != "losses"}, indent=2))


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
