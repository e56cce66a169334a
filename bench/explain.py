"""Fidelity of explanations: does deleting the evidence edges move the item out of the list?

    python bench/explain.py --data ../shared/datasets --out explain.json

For each dataset present under --data (ml-100k's fixed split; sociallgn-lastfm with its friend
links, the joint LightGCN), train LightGCN with the library's job (dim 64, 3 layers, Adam 1e-3,
batch 2048, L2 1e-4, BPR), then for `--pairs` seeded (user, recommended item) pairs (users with at
least 5 history items; the item drawn uniformly from the user's top 20): explain the score,
delete the top-m evidence edges (m = 1, 3, 5) from the graph, propagate again with the trained
parameters (no retraining; the graph's normalisation follows the new degrees) and record the
item's new rank among the user's unseen items and whether it left the top 20. Baselines: m
random edges of the same user (history items and friends alike), and the m history items most
similar to the item by cosine of the item representations (a common heuristic).

Prints a table per dataset, then `SUMMARY {"datasets": {NAME: {"evidence": {"1": CELL, "3":
CELL, "5": CELL}, "random": {...}, "similarity": {...}, "latency_ms": per pair, "sum_error":
largest relative |contributions + remainder - score| / |score|}}}`, CELL = {"left_top20",
"rank_drop"}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from graphrec_jax.config import default_config, lightgcn_protocol
from graphrec_jax.data import datasets_root
from graphrec_jax.graph.build import INTERACTION_EDGE, SOCIAL_EDGE, SOCIAL_REVERSE_EDGE
from graphrec_jax.host_memory import use_huge_pages
from graphrec_jax.models.network import make_representation_fn
from graphrec_jax.serving import explain
from graphrec_jax.serving.recommender import Recommender
from graphrec_jax.training.workdir import train_and_evaluate

SIZES = (1, 3, 5)
TOP = 20


def config_for(name: str, folder: Path, epochs: int, seed: int):
    config = lightgcn_protocol(default_config())
    config.seed = seed
    if name == "ml-100k":
        config.data.format, config.data.path = "lightgcn", str(folder / "split")
    else:
        config.data.format, config.data.path = "sociallgn", str(folder)
    config.data.split.method = "predefined"
    config.train.negative_items = "all"
    config.train.num_epochs = epochs
    config.train.eval_every_epochs = epochs
    config.train.progress_bar = False
    return config


class Reweighter:
    """The graph with some edges deleted: same arrays, deleted edges weigh 0 and the others are
    normalised by the degrees that remain, so one compiled propagation serves every deletion."""

    def __init__(self, graph, social_weight: float):
        self.graph = graph
        self.receivers = np.asarray(graph.receivers, np.int64)
        self.senders = np.asarray(graph.senders, np.int64)
        self.kinds = np.asarray(graph.edges["kind"])
        self.social_weight = social_weight
        self.keys = self.receivers * (self.receivers.max() + 1) + self.senders
        self.num_nodes = int(graph.n_node[0])

    def without(self, pairs: list[tuple[int, int]]):
        """`pairs` of node indices whose edges (both directions, every kind) are deleted."""
        stride = self.receivers.max() + 1
        gone = np.asarray([a * stride + b for a, b in pairs] + [b * stride + a for a, b in pairs], np.int64)
        kept = ~np.isin(self.keys, gone)
        weights = np.zeros(len(kept))
        interaction = self.kinds == INTERACTION_EDGE
        degree = np.bincount(self.receivers[interaction & kept], minlength=self.num_nodes).astype(np.float64)
        mask = interaction & kept
        weights[mask] = 1.0 / np.sqrt(degree[self.receivers[mask]] * degree[self.senders[mask]])
        social = (self.kinds == SOCIAL_EDGE) & kept
        if social.any():
            out_degree = np.bincount(self.receivers[social], minlength=self.num_nodes).astype(np.float64)
            in_degree = np.bincount(self.senders[social], minlength=self.num_nodes).astype(np.float64)
            weights[social] = self.social_weight / np.sqrt(
                out_degree[self.receivers[social]] * in_degree[self.senders[social]]
            )
            reverse = (self.kinds == SOCIAL_REVERSE_EDGE) & kept
            weights[reverse] = self.social_weight / np.sqrt(
                out_degree[self.senders[reverse]] * in_degree[self.receivers[reverse]]
            )
        return self.graph._replace(edges={**self.graph.edges, "weight": weights.astype(np.float32)})


def rank_of(scores: np.ndarray, item: int, excluded: np.ndarray) -> int:
    """1-based rank of `item` among the items not in `excluded` (ties count against it)."""
    allowed = np.ones(len(scores), bool)
    allowed[excluded] = False
    return int(np.sum(allowed & (scores > scores[item]))) + 1


def run_dataset(name: str, folder: Path, args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"explain-{name}-"))
    started = time.perf_counter()
    train_and_evaluate(config_for(name, folder, args.epochs[name], args.seed), workdir)
    print(f"{name}: trained {args.epochs[name]} epochs in {time.perf_counter() - started:.0f}s", flush=True)
    recommender = Recommender.from_checkpoint(workdir, which="latest")
    setup = recommender.setup
    num_users = setup.num_users
    train = setup.dataset.train
    history = [np.sort(train.items[train.users == user]) for user in range(num_users)]
    rng = np.random.default_rng(args.seed)
    eligible = np.flatnonzero([len(items) >= max(SIZES) for items in history])
    users = np.sort(rng.choice(eligible, min(args.pairs, len(eligible)), replace=False))
    tops = recommender.recommend(recommender.user_map.raw_ids[users].tolist(), k=TOP)
    top_items = recommender.item_map.to_index(tops.item_id.tolist()).reshape(len(users), TOP)
    items = top_items[np.arange(len(users)), rng.integers(0, TOP, len(users))]

    started = time.perf_counter()
    sources = explain.compute_sources(setup.model, recommender.params, setup.graph, setup.text_features)
    found = explain.explain_pairs(sources, users, items, num_users, k=max(SIZES))
    latency_ms = (time.perf_counter() - started) * 1000 / len(users)
    # exactness: every neighbour's share, the user's own and the model's own score
    everything = explain.explain_pairs(sources, users, items, num_users, k=int(np.diff(sources.operator.offsets).max()))
    model_scores = np.einsum(
        "pd,pd->p",
        np.asarray(recommender.user_representations)[users],
        np.asarray(recommender.item_representations)[items],
    ).astype(np.float64)
    totals = everything.own + everything.contributions.sum(axis=1)
    sum_error = float(np.max(np.abs(totals - model_scores) / np.maximum(np.abs(model_scores), 1e-12)))

    reweighter = Reweighter(setup.graph, recommender.config.model.social_weight)
    representation = jax.jit(make_representation_fn(setup.model))
    item_vectors = np.asarray(recommender.item_representations)
    item_vectors = item_vectors / np.maximum(np.linalg.norm(item_vectors, axis=1, keepdims=True), 1e-12)
    operator = sources.operator
    results = {method: {size: [] for size in SIZES} for method in ("evidence", "random", "similarity")}
    for index, (user, item) in enumerate(zip(users, items, strict=True)):
        before = rank_of(model_scores_row(recommender, user), item, history[user])
        row = operator.neighbors[operator.offsets[user] : operator.offsets[user + 1]].astype(np.int64)
        similar = history[user][np.argsort(-(item_vectors[history[user]] @ item_vectors[item]), kind="stable")]
        choices = {
            "evidence": [int(node) for node in found.neighbours[index] if node >= 0],
            "random": rng.permutation(row).tolist(),
            "similarity": (num_users + similar).tolist(),
        }
        for method, nodes in choices.items():
            for size in SIZES:
                graph = reweighter.without([(int(user), node) for node in nodes[:size]])
                values = np.asarray(representation(recommender.params, graph, setup.text_features))
                scores = values[num_users:] @ values[user]
                after = rank_of(scores, item, history[user])
                results[method][size].append((after > TOP, after - before))
        if (index + 1) % 100 == 0:
            print(f"  {index + 1}/{len(users)} pairs", flush=True)
    summary = {
        method: {
            str(size): {
                "left_top20": float(np.mean([left for left, _ in cells])),
                "rank_drop": float(np.mean([drop for _, drop in cells])),
            }
            for size, cells in by_size.items()
        }
        for method, by_size in results.items()
    }
    summary["latency_ms"] = latency_ms
    summary["sum_error"] = sum_error
    summary["pairs"] = int(len(users))
    summary["epochs"] = args.epochs[name]
    return summary


def model_scores_row(recommender, user: int) -> np.ndarray:
    return np.asarray(recommender.item_representations) @ np.asarray(recommender.user_representations)[user]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=datasets_root(), help="the datasets folder")
    parser.add_argument("--out", default="explain.json")
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--epochs-ml100k", type=int, default=200)
    parser.add_argument("--epochs-lastfm", type=int, default=400)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()
    args.epochs = {"ml-100k": args.epochs_ml100k, "sociallgn-lastfm": args.epochs_lastfm}
    datasets = {}
    for name in ("ml-100k", "sociallgn-lastfm"):
        folder = args.data / name
        if not folder.is_dir():
            print(f"skipping {name}: {folder} is absent")
            continue
        datasets[name] = run_dataset(name, folder, args)
        cells = datasets[name]
        print(f"\n{name} ({cells['pairs']} pairs): share leaving the top {TOP} / mean rank drop")
        print(f"{'deleted':<10}" + "".join(f"{method:>24}" for method in ("evidence", "random", "similarity")))
        for size in SIZES:
            line = f"{size:<10}"
            for method in ("evidence", "random", "similarity"):
                cell = cells[method][str(size)]
                line += f"{cell['left_top20']:>14.3f} / {cell['rank_drop']:>7.1f}"
            print(line)
        print(f"latency {cells['latency_ms']:.3f} ms per pair, largest relative sum error {cells['sum_error']:.2e}")
    Path(args.out).write_text(json.dumps({"datasets": datasets}, indent=1))
    print("SUMMARY " + json.dumps({"datasets": datasets}))


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
