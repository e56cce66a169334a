"""Dynamic recommendation on ml-100k replayed in time order: fold-in, incremental training, retraining.

    python bench/dynamic.py --data ../shared/datasets/ml-100k --out dynamic.json

Every model is LightGCN with the protocol of `bench/lightgcn.py` (dim 64, 3 layers, N(0, 0.1) init,
Adam 1e-3, batch 2048, BPR with 1e-4 L2, negatives over all items), trained `--epochs` epochs with
the library's run and loop. Interactions are MovieLens `u.data` ordered by timestamp (ties in file
order); every rating counts as an interaction; the item catalogue (all items) is known from the
start, users only once they have interacted.

Stream: train on the first 80% of the interactions, then replay the rest in 4 time-ordered blocks.
Before each block every strategy takes in what arrived since its last update, then the block is
ranked: Recall@20 / NDCG@20 over the block's users, full ranking, every earlier interaction masked.
(a) no update; (b) fold-in: `Recommender.add_interactions` (default method); (c) incremental
training: `training.update.update_from_workdir` for `--steps` steps with `--replay` old pairs per
new one; (d) full retraining from scratch on everything so far, same recipe. Block 1 follows the
training data directly: nothing has arrived, every strategy serves the initial model, and update
times average over blocks 2-4. A user a strategy does not know (first seen in the block itself,
or unseen by "no update") gets the most popular items among those it has seen.

New users: 10% of users held out entirely (seeded); a model trained on the others folds in the
first half (by time) of each held-out user's interactions, and is ranked on the second half,
against a full retraining that saw those first halves. Both fold-in methods are measured
("propagate", "solve"). Latency: one new user a call (first halves of the held-out users, after a
warm-up on another Recommender), and 1,000 synthetic new users (real users' first halves under new
ids) in one call. Save and restore: the folded-in state saved (`Recommender.save`) into its own
workdir and a new one, restored with `from_checkpoint`, must give identical top-20 lists and scores.

Prints a table, writes --out (JSON) and a PNG of Recall@20 per block beside it, and ends with
`SUMMARY {"stream": {...}, "new_users": {...}, "fold_in_ms_per_user", "fold_in_1000_users_s",
"save_restore_identical"}`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from graphrec_jax.config import default_config, lightgcn_protocol
from graphrec_jax.data.readers import read_movielens
from graphrec_jax.data.types import Dataset, IdMap, Interactions
from graphrec_jax.host_memory import use_huge_pages
from graphrec_jax.serving import foldin
from graphrec_jax.serving.metrics import ranking_metrics
from graphrec_jax.serving.propagation import node_representations
from graphrec_jax.serving.ranking import top_k_items
from graphrec_jax.serving.recommender import Recommender
from graphrec_jax.training import hooks
from graphrec_jax.training.loop import train_loop
from graphrec_jax.training.run import build_run
from graphrec_jax.training.update import update_from_workdir, write_run

K = 20
STRATEGIES = ("no_update", "fold_in", "incremental", "retrain")


def protocol_config(epochs: int, seed: int):
    config = lightgcn_protocol(default_config())
    config.seed = seed
    config.data.name = "ml-100k-stream"
    config.train.negative_items = "all"
    config.train.num_epochs = epochs
    config.train.progress_bar = False
    config.eval.k = K
    return config


class Served:
    """What a strategy ranks with: its user map, representations and popularity fallback."""

    def __init__(self, user_map: IdMap, users, items, seen_items: np.ndarray, num_items: int):
        self.user_map = user_map
        self.users, self.items = np.asarray(users, np.float32), np.asarray(items, np.float32)
        self.popular = np.argsort(-np.bincount(seen_items, minlength=num_items), kind="stable")

    @classmethod
    def of(cls, recommender: Recommender) -> Served:
        train = recommender.setup.dataset.train
        return cls(
            recommender.user_map,
            recommender.user_representations,
            recommender.item_representations,
            train.items,
            len(recommender.item_map),
        )


def train(config, dataset: Dataset, epochs: int):
    """A run trained from scratch for `epochs` epochs, and its wall time (build, compile, steps)."""
    started = time.perf_counter()
    run = build_run(config, dataset)
    train_loop(run, num_epochs=epochs, hooks=[hooks.LossMonitor(50)])
    jax.block_until_ready(run.state.params)
    return run, time.perf_counter() - started


def served_run(run) -> Served:
    setup = run.setup
    values = np.asarray(node_representations(setup.model, run.params(), setup.graph, backend="auto"))
    num_users = setup.dataset.num_users
    return Served(
        setup.dataset.user_map,
        values[:num_users],
        values[num_users:],
        setup.dataset.train.items,
        setup.dataset.num_items,
    )


def dataset_of(events: pd.DataFrame, item_map: IdMap) -> Dataset:
    """The training dataset of some events: their users (sorted) and the whole catalogue."""
    user_map = IdMap("user", np.sort(events.user.unique()))
    return Dataset(
        user_map=user_map,
        item_map=item_map,
        train=Interactions(user_map.to_index(events.user.tolist()), events.item_index.to_numpy()),
        evaluation={},
        name="ml-100k-stream",
    )


def rank(served: Served, users: list, seen: dict, heldout: dict, num_items: int) -> dict[str, float]:
    """Recall/NDCG@20 of `served` over `users` (raw ids): `seen[user]` masked, `heldout[user]` hit."""
    known = [user for user in users if user in served.user_map]
    top = np.full((len(users), K), -1, np.int64)
    if known:
        rows = served.user_map.to_index(known)
        exclude_rows = [np.asarray(sorted(seen.get(user, ())), np.int32) for user in known]
        offsets = np.zeros(len(served.user_map) + 1, np.int64)
        lengths = np.zeros(len(served.user_map), np.int64)
        lengths[rows] = [len(row) for row in exclude_rows]
        np.cumsum(lengths, out=offsets[1:])
        values = np.zeros(int(offsets[-1]), np.int32)
        for row, items in zip(rows, exclude_rows, strict=True):
            values[offsets[row] : offsets[row + 1]] = items
        items, _ = top_k_items(served.users, served.items, rows, K, exclude=(offsets, values), user_chunk_size=256)
        position = {user: index for index, user in enumerate(users)}
        top[[position[user] for user in known]] = items
    for index, user in enumerate(users):
        if user not in served.user_map:
            masked = seen.get(user, set())
            top[index] = [item for item in served.popular if item not in masked][:K]
    offsets = np.zeros(len(users) + 1, np.int64)
    np.cumsum([len(heldout[user]) for user in users], out=offsets[1:])
    held = np.concatenate([np.sort(np.fromiter(heldout[user], np.int64)) for user in users])
    metrics = ranking_metrics(top, offsets, held, [K], num_items)
    return {f"recall@{K}": metrics[f"recall@{K}"], f"ndcg@{K}": metrics[f"ndcg@{K}"]}


def item_sets(events: pd.DataFrame) -> dict:
    return {user: set(group) for user, group in events.groupby("user").item_index}


def stream(events, item_map, config, args, workdir: Path) -> dict:
    num_items = len(item_map)
    cut = int(len(events) * 0.8)
    bounds = np.linspace(cut, len(events), args.blocks + 1).round().astype(int)
    print(f"stream: {cut} training interactions, blocks of {np.diff(bounds).tolist()}", flush=True)
    initial, initial_s = train(config, dataset_of(events[:cut], item_map), args.epochs)
    print(f"initial training: {initial_s:.1f} s", flush=True)
    write_run(workdir / "incremental", initial, epoch=args.epochs)
    base = served_run(initial)
    folded = {method: Recommender.from_checkpoint(workdir / "incremental") for method in foldin.METHODS}
    refreshed = Recommender.from_checkpoint(workdir / "incremental")
    current = {"no_update": base, "incremental": base, "retrain": base, "fold_in": base}
    extra = {f"fold_in_{method}": base for method in foldin.METHODS} | {"fold_in_refresh": base}
    blocks = []
    for index in range(args.blocks):
        start, stop = bounds[index], bounds[index + 1]
        update_s = {}
        if index > 0:
            arrived = events[bounds[index - 1] : start]
            table = pd.DataFrame({"user_id": arrived.user.to_numpy(), "item_id": arrived.item.to_numpy()})
            for method, recommender in folded.items():
                started = time.perf_counter()
                recommender.add_interactions(table, method=method)
                update_s[f"fold_in_{method}"] = time.perf_counter() - started
                extra[f"fold_in_{method}"] = Served.of(recommender)
            update_s["fold_in"] = update_s[f"fold_in_{foldin.DEFAULT_METHOD}"]
            current["fold_in"] = extra[f"fold_in_{foldin.DEFAULT_METHOD}"]
            started = time.perf_counter()
            refreshed.add_interactions(table)
            refreshed.refresh()
            update_s["fold_in_refresh"] = time.perf_counter() - started
            extra["fold_in_refresh"] = Served.of(refreshed)
            started = time.perf_counter()
            summary = update_from_workdir(workdir / "incremental", table, steps=args.steps, replay=args.replay)
            update_s["incremental"] = time.perf_counter() - started
            current["incremental"] = Served.of(Recommender.from_checkpoint(workdir / "incremental"))
            print(f"  incremental update: {json.dumps(summary)}", flush=True)
            run, update_s["retrain"] = train(config, dataset_of(events[:start], item_map), args.epochs)
            current["retrain"] = served_run(run)
            update_s["no_update"] = 0.0
        block = events[start:stop]
        seen, heldout = item_sets(events[:start]), item_sets(block)
        users = sorted(heldout)
        row = {"block": index + 1, "interactions": int(stop - start), "users": len(users)}
        row["new_users"] = int(sum(user not in seen for user in users))
        for name, served in {**current, **extra}.items():
            row[name] = rank(served, users, seen, heldout, num_items) | {"update_s": update_s.get(name)}
        blocks.append(row)
        print(
            f"block {index + 1}: "
            + ", ".join(f"{name} {row[name][f'recall@{K}']:.4f}" for name in (*STRATEGIES, *extra))
            + "; update s "
            + ", ".join(f"{name} {value:.2f}" for name, value in update_s.items()),
            flush=True,
        )
    summary = {}
    for name in (*STRATEGIES, *extra):
        times = [row[name]["update_s"] for row in blocks[1:]]
        summary[name] = {
            f"recall@{K}": float(np.mean([row[name][f"recall@{K}"] for row in blocks])),
            f"ndcg@{K}": float(np.mean([row[name][f"ndcg@{K}"] for row in blocks])),
            "update_s": float(np.mean(times)) if times else 0.0,
            f"recall@{K}_blocks_2_4": float(np.mean([row[name][f"recall@{K}"] for row in blocks[1:]])),
        }
    return {"initial_training_s": initial_s, "blocks": blocks, "summary": summary}


def new_users(events, item_map, config, args, workdir: Path) -> dict:
    num_items = len(item_map)
    users = np.sort(events.user.unique())
    held = sorted(np.random.default_rng(args.seed).choice(users, size=round(0.1 * len(users)), replace=False).tolist())
    rank_in_user = events.groupby("user").cumcount()
    size = events.groupby("user").user.transform("size")
    is_held = events.user.isin(held)
    first = events[is_held & (rank_in_user < size // 2)]
    second = events[is_held & (rank_in_user >= size // 2)]
    others = events[~is_held]
    print(
        f"new users: {len(held)} held out, {len(first)} first-half and {len(second)} second-half interactions",
        flush=True,
    )
    base, base_s = train(config, dataset_of(others, item_map), args.epochs)
    write_run(workdir / "base", base, epoch=args.epochs)
    seen, heldout = item_sets(first), item_sets(second)
    ranked = held
    table = pd.DataFrame({"user_id": first.user.to_numpy(), "item_id": first.item.to_numpy()})
    results = {"popular": rank(served_run(base), ranked, seen, heldout, num_items)}
    recommenders = {}
    for method in foldin.METHODS:
        recommender = Recommender.from_checkpoint(workdir / "base")
        recommender.add_interactions(table, method=method)
        results[f"fold_in_{method}"] = rank(Served.of(recommender), ranked, seen, heldout, num_items)
        recommenders[method] = recommender
    embedding = {  # the layer-0 rows' mean norm: trained users against new users solved for
        name: float(np.mean(np.linalg.norm(np.asarray(rec.params["node_embedding"])[rows], axis=1)))
        for name, rec, rows in (
            ("trained_users", recommenders["solve"], np.arange(len(others.user.unique()))),
            ("solved_new_users", recommenders["solve"], np.arange(len(others.user.unique()), len(users))),
        )
    }
    retrained, retrain_s = train(config, dataset_of(pd.concat([others, first]), item_map), args.epochs)
    results["retrain"] = rank(served_run(retrained), ranked, seen, heldout, num_items)
    for name, metrics in results.items():
        print(f"  {name:20s} recall@20 {metrics['recall@20']:.4f}  ndcg@20 {metrics['ndcg@20']:.4f}", flush=True)
    return {
        "held_out_users": len(held),
        "base_training_s": base_s,
        "retrain_s": retrain_s,
        "results": results,
        "embedding_norms": embedding,
        "latency": latency(workdir / "base", events, first, args),
        "save_restore": save_restore(recommenders[foldin.DEFAULT_METHOD], workdir),
    }


def latency(base_workdir: Path, events, first, args) -> dict:
    """Single-user fold-in calls (the held-out users one by one) and one call of 1,000 new users."""
    histories = [group.item.tolist() for _, group in first.groupby("user", sort=True)]
    rng = np.random.default_rng(args.seed + 1)
    by_user = [group.item.tolist()[: max(1, len(group) // 2)] for _, group in events.groupby("user")]
    synthetic = [by_user[index] for index in rng.integers(0, len(by_user), args.batch_users)]
    out = {}
    for method in foldin.METHODS:
        warm = Recommender.from_checkpoint(base_workdir)  # compiles once per process and shape
        warm.add_interactions([("warm-up", item) for item in histories[0]], method=method)
        warm.add_interactions(_table(synthetic, "warm"), method=method)
        recommender = Recommender.from_checkpoint(base_workdir)
        times = []
        for index, history in enumerate(histories):
            started = time.perf_counter()
            recommender.add_interactions([(f"single-{index}", item) for item in history], method=method)
            times.append(time.perf_counter() - started)
        started = time.perf_counter()
        recommender.recommend([f"single-{len(histories) - 1}"], k=K)
        first_recommend = time.perf_counter() - started
        batch = Recommender.from_checkpoint(base_workdir)
        table = _table(synthetic, "batch")
        started = time.perf_counter()
        batch.add_interactions(table, method=method)
        batch_s = time.perf_counter() - started
        out[method] = {
            "single_ms_mean": 1e3 * float(np.mean(times)),
            "single_ms_p50": 1e3 * float(np.median(times)),
            "single_ms_p95": 1e3 * float(np.percentile(times, 95)),
            "first_recommend_after_ms": 1e3 * first_recommend,
            "batch_users": len(synthetic),
            "batch_interactions": len(table),
            "batch_s": batch_s,
        }
        print(f"  latency {method}: {json.dumps(out[method])}", flush=True)
    return out


def _table(histories: list, prefix: str) -> pd.DataFrame:
    users = [f"{prefix}-{index}" for index, history in enumerate(histories) for _ in history]
    return pd.DataFrame({"user_id": users, "item_id": [item for history in histories for item in history]})


def save_restore(recommender: Recommender, workdir: Path) -> dict:
    """Saves a folded-in state into its own workdir and a new one; both restores must rank alike."""
    users = recommender.user_ids
    before = recommender.recommend(users, k=K)
    identical = {}
    for name, target in (("same_workdir", workdir / "base"), ("new_workdir", workdir / "saved")):
        step = recommender.save(target)
        after = Recommender.from_checkpoint(target).recommend(users, k=K)
        identical[name] = bool(before.equals(after))
        print(f"  save + restore ({name}, step {step}): identical {identical[name]}", flush=True)
    return identical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the ml-100k folder (u.data)")
    parser.add_argument("--out", required=True, help="JSON results; the PNG is written beside it")
    parser.add_argument("--epochs", type=int, default=200, help="epochs of every full training")
    parser.add_argument("--steps", type=int, default=800, help="incremental training steps per update")
    parser.add_argument("--replay", type=float, default=1.0, help="old pairs replayed per new pair")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--batch-users", type=int, default=1000, help="new users in the batched fold-in")
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()
    started = time.perf_counter()
    raw = read_movielens(Path(args.data)).interactions
    events = raw.sort_values("timestamp", kind="stable").reset_index(drop=True)
    item_map = IdMap("item", np.sort(events.item.unique()))
    events["item_index"] = item_map.to_index(events.item.tolist()).astype(np.int64)
    config = protocol_config(args.epochs, args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        newcomers = new_users(events, item_map, config, args, workdir)
        replay = stream(events, item_map, config, args, workdir)
    summary = {
        "stream": {
            name: {key: replay["summary"][name][key] for key in (f"recall@{K}", f"ndcg@{K}", "update_s")}
            for name in STRATEGIES
        },
        "new_users": {
            f"fold_in_recall@{K}": newcomers["results"][f"fold_in_{foldin.DEFAULT_METHOD}"][f"recall@{K}"],
            f"retrain_recall@{K}": newcomers["results"]["retrain"][f"recall@{K}"],
        },
        "fold_in_ms_per_user": newcomers["latency"][foldin.DEFAULT_METHOD]["single_ms_mean"],
        "fold_in_1000_users_s": newcomers["latency"][foldin.DEFAULT_METHOD]["batch_s"],
        "save_restore_identical": all(newcomers["save_restore"].values()),
    }
    result = {
        "protocol": {
            "epochs": args.epochs,
            "incremental_steps": args.steps,
            "replay": args.replay,
            "blocks": args.blocks,
            "seed": args.seed,
            "default_fold_in": foldin.DEFAULT_METHOD,
        },
        "stream": replay,
        "new_users": newcomers,
        "summary": summary,
        "wall_s": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=1))
    plot(replay, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} in {result['wall_s']:.0f} s")
    print("SUMMARY " + json.dumps(summary))


def plot(replay: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = [row["block"] for row in replay["blocks"]]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, (f"recall@{K}", f"ndcg@{K}"), strict=True):
        for name in (*STRATEGIES, "fold_in_refresh"):
            axis.plot(blocks, [row[name][metric] for row in replay["blocks"]], marker="o", label=name)
        axis.set_xlabel("block (time order)")
        axis.set_ylabel(metric)
        axis.set_xticks(blocks)
        axis.set_title(f"ml-100k stream: {metric} per block")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
