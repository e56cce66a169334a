"""Relevance against diversity: LightGCN lists re-ranked by MMR and DPP over a sweep of `diversity`.

    python bench/diversity.py --data ../shared/datasets --out diversity.json     # both datasets
    python bench/diversity.py --data ../shared/datasets/sociallgn-lastfm --out lastfm.json

`--data` is the datasets root (holding amazon-office-text/ and sociallgn-lastfm/; those present run, the
absent are skipped with a message) or one of those folders. Per dataset it trains once with the library's
run and loop (LightGCN, dim 64, 3 layers, Adam lr 1e-3, batch 2048, L2 1e-4, BPR, negatives over all items):
amazon-office-text on its `split/` warm split with item categories (600 epochs, about 2 minutes on 2 CPU
cores), sociallgn-lastfm on the SocialLGN split with the artists' top tags from raw/ (300 epochs, about 3
minutes); `--epochs-office` and `--epochs-lastfm` change them. Then it builds a `Recommender` in memory
and asks it for every test user's top 20 (training items masked, all items ranked, LightGCN's metric
definitions) at diversity = 0, 0.1, ..., 0.9 for MMR and for DPP, re-ranking each user's top `--pool`
items by category/tag Jaccard similarity (`diversify_by="auto"`).

Each point: recall@20, ndcg@20, ild@20 (cosine distance of the item representations), ild_category@20
(category/tag Jaccard distance), category_coverage@20, coverage@20 (share of the catalogue recommended to
anyone), novelty@20 and gini@20 (`serving.beyond_accuracy`). Latency is `bench/rerank_latency.py`'s
measurement: 1,024 users, pool 200 -> k 20, random 64-d unit features, median after compilation.

Prints a table per dataset, whether the targets are met (a setting with <= 3% NDCG@20 loss against
diversity 0 that raises ild_category@20 to >= 1.15x and coverage@20 to >= 1.5x), then
`SUMMARY {json}` last. Writes `--out` (JSON) and the trade-off curves beside it (the same name, .png).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np
from rerank_latency import time_rerank  # bench/rerank_latency.py

from graphrec_jax.config import default_config, lightgcn_protocol
from graphrec_jax.host_memory import use_huge_pages
from graphrec_jax.serving.beyond_accuracy import beyond_accuracy_metrics, item_popularity, labels_to_csr
from graphrec_jax.serving.diversity import diversified_top_k, padded_labels, unit_rows
from graphrec_jax.serving.metrics import ranking_metrics
from graphrec_jax.serving.ranking import csr_by_user, csr_rows
from graphrec_jax.serving.recommender import Recommender
from graphrec_jax.training import hooks
from graphrec_jax.training.loop import Hook, train_loop
from graphrec_jax.training.run import build_run

K = 20
DIVERSITIES = [round(0.1 * step, 1) for step in range(10)]
METHODS = ("mmr", "dpp")
# name -> (data.format, data.split.folder, default epochs): each trains in a few minutes on 2 CPU cores.
DATASETS = {
    "amazon-office-text": ("amazon", "split", 600),
    "sociallgn-lastfm": ("sociallgn", "", 300),
}
TARGET_NDCG_LOSS, TARGET_ILD_CATEGORY, TARGET_COVERAGE = 0.03, 1.15, 1.5


def dataset_folders(data: Path) -> dict[str, Path]:
    """The benchmark datasets under `data` (a root or one dataset folder); prints a line for each absent one."""
    if data.name in DATASETS:
        return {data.name: data}
    found = {}
    for name in DATASETS:
        if (data / name).is_dir():
            found[name] = data / name
        else:
            print(f"skipping {name}: {data / name} is absent", flush=True)
    return found


def protocol_config(name: str, path: Path, epochs: int, seed: int):
    """LightGCN with the LightGCN-PyTorch protocol on one dataset, as a run config."""
    file_format, folder, _ = DATASETS[name]
    config = lightgcn_protocol(default_config())
    config.seed = seed
    config.data.format = file_format
    config.data.path = str(path)
    config.data.split.method = "predefined"
    config.data.split.folder = folder
    config.train.negative_items = "all"
    config.train.num_epochs = epochs
    config.train.progress_bar = False
    config.eval.k = K
    config.eval.user_chunk_size = 2048
    return config


class EpochLog(Hook):
    """Prints the loss every `every` epochs."""

    def __init__(self, every: int):
        self.every = every

    def on_epoch_end(self, loop):
        if (loop.epoch + 1) % self.every == 0:
            record = loop.record
            print(f"  epoch {loop.epoch + 1:4d} loss {record['loss']:.5f} ({record['epoch_seconds']:.2f}s)", flush=True)


def train(name: str, path: Path, epochs: int, seed: int) -> tuple[Recommender, dict]:
    """Trains once; returns an in-memory Recommender of the final parameters and the training facts."""
    config = protocol_config(name, path, epochs, seed)
    started = time.perf_counter()
    run = build_run(config)
    dataset = run.setup.dataset
    print(
        f"{name}: {dataset.num_users} users, {dataset.num_items} items, {len(dataset.train)} training "
        f"interactions; training {epochs} epochs of {run.batches_per_epoch} batches",
        flush=True,
    )
    train_loop(
        run,
        num_epochs=epochs,
        hooks=[hooks.LossMonitor(every_steps=run.batches_per_epoch), hooks.EpochTimer(), EpochLog(max(1, epochs // 5))],
    )
    train_seconds = time.perf_counter() - started
    recommender = Recommender(config, run.setup, run.params(), step=run.step, item_categories=dataset.item_categories)
    facts = {
        "num_users": dataset.num_users,
        "num_items": dataset.num_items,
        "num_train": len(dataset.train),
        "epochs": epochs,
        "train_seconds": round(train_seconds, 1),
        "items_with_categories": sum(bool(labels) for labels in dataset.item_categories or []),
    }
    return recommender, facts


def as_matrix(recommender: Recommender, table, user_ids: list, k: int) -> np.ndarray:
    """A recommend() table as `[len(user_ids), k]` item indices, -1 for empty slots."""
    top = np.full((len(user_ids), k), -1, np.int64)
    if len(table):
        position = {user: row for row, user in enumerate(user_ids)}
        rows = [position[user] for user in table["user_id"]]
        top[rows, table["rank"].to_numpy() - 1] = recommender.item_map.to_index(list(table["item_id"]))
    return top


def sweep(recommender: Recommender, pool: int) -> tuple[dict, bool, dict]:
    """Every method and diversity on the test users: (points per method, identical at zero, seconds)."""
    dataset = recommender.setup.dataset
    test = dataset.evaluation["test"]
    heldout_csr = csr_by_user(test.interactions, dataset.num_users)
    users = np.flatnonzero(np.diff(heldout_csr[0]) > 0)
    user_ids = recommender.user_map.raw_ids[users].tolist()
    local, heldout = csr_rows(heldout_csr, users)
    train_by_user = csr_by_user(dataset.train, dataset.num_users)
    extras = dict(
        item_vectors=np.asarray(recommender.item_representations),
        item_categories=labels_to_csr(recommender.item_categories, dataset.num_items)
        if recommender.item_categories
        else None,
        item_popularity=item_popularity(train_by_user, dataset.num_items),
        num_users=dataset.num_users,
        candidate_items=dataset.num_items,
    )
    points, seconds = {method: [] for method in METHODS}, {method: [] for method in METHODS}
    baseline = None
    for method in METHODS:
        for diversity in DIVERSITIES:
            started = time.perf_counter()
            table = recommender.recommend(user_ids, k=K, diversity=diversity, method=method, pool=pool)
            seconds[method].append(round(time.perf_counter() - started, 3))
            top = as_matrix(recommender, table, user_ids, K)
            if diversity == 0:
                baseline = top
            metrics = ranking_metrics(top, local, heldout, [K], dataset.num_items)
            metrics.update(beyond_accuracy_metrics(top, [K], **extras))
            point = {"diversity": diversity}
            for key in ("recall", "ndcg", "ild", "ild_category", "category_coverage", "coverage", "novelty", "gini"):
                value = metrics.get(f"{key}@{K}")
                point[f"{key}@{K}"] = None if value is None or not np.isfinite(value) else round(float(value), 5)
            points[method].append(point)
    # diversity 0 in recommend() skips re-ranking; the re-ranking path at 0 must give the same lists too.
    identical = True
    if extras["item_categories"] is not None:
        features, kind = padded_labels(extras["item_categories"]), "jaccard_labels"
    else:
        features, kind = unit_rows(extras["item_vectors"]), "cosine"
    for method in METHODS:
        items, _ = diversified_top_k(
            recommender.user_representations,
            recommender.item_representations,
            users,
            K,
            item_features=features,
            kind=kind,
            diversity=0.0,
            method=method,
            pool=pool,
            exclude=train_by_user,
            user_chunk_size=recommender.config.eval.user_chunk_size,
            backend=recommender.config.model.aggregation,
        )
        identical &= bool(np.array_equal(items, baseline))
    return points, identical, seconds


def target_check(points: dict) -> dict:
    """Each setting's ratios to diversity 0 (the same lists for both methods): the settings that meet the
    targets, per method the most diverse setting within the NDCG@20 loss budget, and the coverage ceiling
    (coverage cannot exceed 1, so no setting can raise it beyond 1 / coverage at 0)."""
    base = points["mmr"][0]
    met, within_budget = [], {}
    for method in METHODS:
        for point in points[method][1:]:
            ratios = {
                "method": method,
                "diversity": point["diversity"],
                "ndcg_ratio": round(point[f"ndcg@{K}"] / base[f"ndcg@{K}"], 4),
                "ild_category_ratio": round((point[f"ild_category@{K}"] or 0.0) / base[f"ild_category@{K}"], 4)
                if base[f"ild_category@{K}"]
                else None,
                "coverage_ratio": round(point[f"coverage@{K}"] / base[f"coverage@{K}"], 4),
            }
            if ratios["ndcg_ratio"] >= 1 - TARGET_NDCG_LOSS:
                within_budget[method] = ratios  # diversities ascend: the last one kept is the most diverse
                if (ratios["ild_category_ratio"] or 0.0) >= TARGET_ILD_CATEGORY and ratios[
                    "coverage_ratio"
                ] >= TARGET_COVERAGE:
                    met.append(ratios)
    return {
        "met_by": met,
        "most_diverse_within_ndcg_budget": within_budget,
        "coverage_ceiling": 1 / base[f"coverage@{K}"],
    }


def print_table(name: str, points: dict, seconds: dict) -> None:
    keys = ["recall", "ndcg", "ild", "ild_category", "category_coverage", "coverage", "novelty", "gini"]
    print(f"\n{name} (@{K}; sweep s: one recommend() call for every test user)")
    print(f"{'method':<7}{'div':>5}" + "".join(f"{key:>{max(len(key), 6) + 2}}" for key in keys) + f"{'sweep s':>9}")
    for method in METHODS:
        for point, spent in zip(points[method], seconds[method], strict=True):
            values = "".join(
                f"{'-' if point[f'{key}@{K}'] is None else format(point[f'{key}@{K}'], '.4f'):>{max(len(key), 6) + 2}}"
                for key in keys
            )
            print(f"{method:<7}{point['diversity']:>5.1f}{values}{spent:>9.2f}")


def latency(repeats: int, seed: int) -> dict[str, float]:
    """Median ms of `rerank` after compilation: 1,024 users, pool 200 -> k 20, 64-d unit features."""
    rng = np.random.default_rng(seed)
    relevance = jax.device_put(rng.normal(size=(1024, 200)).astype(np.float32))
    features = rng.normal(size=(1024, 200, 64)).astype(np.float32)
    features = jax.device_put(features / np.linalg.norm(features, axis=-1, keepdims=True))
    return {
        method: round(statistics.median(time_rerank(relevance, features, K, repeats, diversity=0.5, method=method)), 2)
        for method in METHODS
    }


def plot(curves: dict, path: Path) -> None:
    """NDCG@20 against ILD@20, one line per method, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4.2), squeeze=False)
    for axis, (name, points) in zip(axes[0], curves.items(), strict=True):
        for method in METHODS:
            ild = [point[f"ild@{K}"] for point in points[method]]
            ndcg = [point[f"ndcg@{K}"] for point in points[method]]
            axis.plot(ild, ndcg, marker="o", label=method.upper())
            for point, x, y in zip(points[method], ild, ndcg, strict=True):
                axis.annotate(f"{point['diversity']:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.set_xlabel(f"ILD@{K} (cosine distance of item representations)")
        axis.set_ylabel(f"NDCG@{K}")
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the datasets root, or amazon-office-text/ or sociallgn-lastfm/")
    parser.add_argument("--out", default="diversity.json", help="JSON results; the PNG goes beside it")
    parser.add_argument("--pool", type=int, default=200, help="items re-ranked per user")
    for name, (_, _, epochs) in DATASETS.items():
        flag = "--epochs-" + name.split("-")[1]
        parser.add_argument(flag, type=int, default=epochs, help=f"training epochs on {name}")
    parser.add_argument("--repeats", type=int, default=30, help="timed latency calls per method")
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()

    started = time.perf_counter()
    folders = dataset_folders(Path(args.data))
    if not folders:
        raise SystemExit(f"error: no benchmark dataset under {args.data} (expected {', '.join(DATASETS)})")
    results, curves, identical = {}, {}, True
    for name, path in folders.items():
        epochs = getattr(args, "epochs_" + name.split("-")[1])
        recommender, facts = train(name, path, epochs, args.seed)
        points, same, seconds = sweep(recommender, args.pool)
        print_table(name, points, seconds)
        targets = target_check(points)
        verdict = f"met by {targets['met_by']}" if targets["met_by"] else "NOT met by any setting"
        print(
            f"{name}: targets (NDCG@20 loss <= {TARGET_NDCG_LOSS:.0%}, ild_category@20 >= {TARGET_ILD_CATEGORY}x, "
            f"coverage@20 >= {TARGET_COVERAGE}x) {verdict}; coverage can rise at most "
            f"{targets['coverage_ceiling']:.3f}x; most diverse settings within the NDCG budget: "
            f"{list(targets['most_diverse_within_ndcg_budget'].values())}",
            flush=True,
        )
        results[name] = {**facts, "points": points, "sweep_seconds": seconds, "targets": targets}
        curves[name] = points
        identical &= same
    latencies = latency(args.repeats, args.seed)
    print(f"\nrerank latency, 1,024 users, pool 200 -> k 20 (median ms): {latencies}")
    summary = {
        "datasets": curves,
        "mmr_latency_ms": latencies["mmr"],
        "dpp_latency_ms": latencies["dpp"],
        "identical_at_zero": identical,
    }
    out = Path(args.out)
    environment = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    wall = round(time.perf_counter() - started, 1)
    payload = {"args": vars(args), "env": environment, "wall_s": wall, "results": results, "summary": summary}
    out.write_text(json.dumps(payload, indent=1))
    plot(curves, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} in {wall}s")
    print("SUMMARY " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
