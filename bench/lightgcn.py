"""LightGCN with the official LightGCN-PyTorch protocol, timed like the PyG reference.

    python bench/lightgcn.py --data ../shared/datasets/ml-100k/split --epochs 200 --eval-every 20 \
        --seed 2020 --out ml100k.json
    python bench/lightgcn.py --data ../shared/datasets/lightgcn-gowalla --epochs 3 --eval-every 1 --out gowalla.json

Protocol: dim 64, 3 layers, N(0, 0.1) init, Adam lr 1e-3, batch 2048, one uniform
(user, positive, negative) triple per training interaction per epoch (negatives uniform over
all items), loss = mean softplus(neg - pos) + 1e-4 * 0.5 * (||u0||^2 + ||p0||^2 + ||n0||^2) / B,
full propagation for every batch, full-ranking Recall@20 / NDCG@20 with training items masked.

It trains with the library's own run and loop (`training.run.build_run`, `training.loop.train_loop`),
the ones `scripts/train.py` runs, with benchmark hooks for timing; no checkpoints are written.

Prints one line per epoch, then `SUMMARY {json}` with median_epoch_train_s, median_eval_s,
final_recall, final_ndcg and peak_rss_mib (the keys the reference prints).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import numpy as np
from measure import contended, cpu_snapshot, peak_rss_mib  # bench/measure.py

from graphrec_jax.config import default_config
from graphrec_jax.host_memory import use_huge_pages
from graphrec_jax.kernels import BACKENDS
from graphrec_jax.training import hooks
from graphrec_jax.training.loop import Hook, train_loop
from graphrec_jax.training.run import build_run


def protocol_config(args):
    """The LightGCN protocol as a run config."""
    config = default_config()
    config.seed = args.seed
    config.data.format = "lightgcn"
    config.data.path = args.data
    config.data.split.method = "predefined"
    config.model.embedding_dim = args.dim
    config.model.num_layers = args.layers
    config.model.init_std = 0.1
    config.model.aggregation = args.aggregation
    config.train.batch_size = args.batch
    config.train.learning_rate = args.lr
    config.train.l2_weight = args.decay
    config.train.negative_items = "all"
    config.train.num_epochs = args.epochs
    config.train.eval_every_epochs = args.eval_every
    config.train.progress_bar = False
    config.sampling.prefetch_batches = args.prefetch
    config.train.steps_per_call = args.steps_per_call
    config.eval.k = args.topk
    config.eval.user_chunk_size = args.eval_chunk
    return config


class BenchmarkLog(Hook):
    """Times every epoch and evaluation, notes other jobs' CPU load, prints a line per epoch, and
    stops at a target recall or a time budget."""

    def __init__(self, args):
        self.args = args
        self.epochs: list[dict] = []
        self.evaluations: list[dict] = []
        self.run_started = 0.0

    def on_start(self, loop):
        self.run_started = time.perf_counter()

    def on_epoch_start(self, loop):
        self.cpu_before = cpu_snapshot()

    def after_step(self, loop, metrics):
        done = loop.step - loop.epoch * loop.batches_per_epoch
        if self.args.max_batches and done >= self.args.max_batches:
            loop.end_epoch = True

    def on_epoch_end(self, loop):
        # After LossMonitor and EpochTimer, before Evaluation: the budget check must come first,
        # so that the evaluation sees the request and evaluates once more.
        record = loop.record
        batches = loop.step - max(loop.epoch * loop.batches_per_epoch, loop.start_step)
        entry = {
            "epoch": loop.epoch + 1,
            "train_s": record["epoch_seconds"],
            "n_batches": batches,
            "loss": record["loss"],
            "contended": contended(self.cpu_before, cpu_snapshot()),
        }
        if batches < loop.batches_per_epoch:
            entry["extrapolated_train_s"] = record["epoch_seconds"] / batches * loop.batches_per_epoch
        self.epochs.append(entry)
        self.eval_cpu_before = cpu_snapshot()
        budget = self.args.time_budget_s
        if budget > 0 and time.perf_counter() - self.run_started >= budget:
            loop.stop = loop.evaluate_now = True
            print(f"time budget of {budget:.0f}s spent at epoch {loop.epoch + 1}", flush=True)


class EvaluationLog(Hook):
    """After `Evaluation`: notes the figures and prints the epoch's line."""

    def __init__(self, log: BenchmarkLog, topk: int):
        self.log = log
        self.topk = topk

    def on_epoch_end(self, loop):
        entry = self.log.epochs[-1]
        line = (
            f"epoch {entry['epoch']:4d} train {entry['train_s']:8.3f}s ({entry['n_batches']} batches "
            f"{entry['train_s'] / entry['n_batches'] * 1000:.1f} ms/batch) loss {entry['loss']:.5f}"
        )
        if "extrapolated_train_s" in entry:
            line += f" [partial epoch; extrapolated full epoch {entry['extrapolated_train_s']:.1f}s]"
        evaluated = "metrics" in loop.record
        if evaluated:
            metrics = loop.record["metrics"]
            evaluation = {
                "epoch": entry["epoch"],
                "recall": metrics[f"test/recall@{self.topk}"],
                "ndcg": metrics[f"test/ndcg@{self.topk}"],
                "precision": metrics[f"test/precision@{self.topk}"],
                "n_test_users": metrics["test/num_users"],
                "eval_s": loop.record["eval_seconds_total"],
                "contended": contended(self.log.eval_cpu_before, cpu_snapshot()),
            }
            self.log.evaluations.append(evaluation)
            line += (
                f" | eval {evaluation['eval_s']:.3f}s recall@{self.topk} {evaluation['recall']:.5f} "
                f"ndcg@{self.topk} {evaluation['ndcg']:.5f}"
            )
        line += f" | peakRSS {peak_rss_mib():.0f} MiB"
        if entry["contended"] or (evaluated and self.log.evaluations[-1]["contended"]):
            line += " CONTENDED"
        print(line, flush=True)
        target = self.log.args.target_recall
        if evaluated and target > 0 and self.log.evaluations[-1]["recall"] >= target:
            print(f"reached Recall@{self.topk} {target} at epoch {entry['epoch']}", flush=True)
            loop.stop = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with train.txt and test.txt")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", default="lightgcn.json")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--decay", type=float, default=1e-4)
    parser.add_argument("--topk", type=int, default=20)
    parser.add_argument("--eval-chunk", type=int, default=2048, help="users per ranking call")
    parser.add_argument("--aggregation", default="auto", choices=BACKENDS)
    parser.add_argument(
        "--prefetch",
        type=int,
        default=default_config().sampling.prefetch_batches,
        help="sampling.prefetch_batches (the host producer serves sampled and fine-tuning batches only)",
    )
    parser.add_argument(
        "--steps-per-call",
        type=int,
        default=1,
        help="train.steps_per_call: > 1 runs that many steps per compiled call on batches drawn on device",
    )
    parser.add_argument(
        "--max-batches",
        type=int,
        default=0,
        help="timing only: at most this many batches per epoch; the full epoch time is extrapolated",
    )
    parser.add_argument(
        "--time-budget-s",
        type=float,
        default=0.0,
        help="stop after the epoch at which this many seconds of training and evaluation have passed "
        "(then evaluate once more); 0 runs every epoch",
    )
    parser.add_argument(
        "--target-recall", type=float, default=0.0, help="stop at the first evaluation reaching this Recall@topk"
    )
    args = parser.parse_args()

    setup_started = time.perf_counter()
    config = protocol_config(args)
    run = build_run(config)
    dataset = run.setup.dataset
    setup_seconds = time.perf_counter() - setup_started
    info = {
        "dataset": os.path.abspath(args.data),
        "n_users": dataset.num_users,
        "n_items": dataset.num_items,
        "n_train": len(dataset.train),
        "n_test": len(dataset.evaluation["test"].interactions),
        "batches_per_epoch": run.batches_per_epoch,
    }
    environment = {
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "devices": [str(device) for device in jax.local_devices()],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
    }
    print(json.dumps({"args": vars(args), "data": info, "env": environment}), flush=True)
    print(f"setup {setup_seconds:.2f}s", flush=True)

    log = BenchmarkLog(args)
    # The loss is read once an epoch, as the reference does: no mid-epoch waits for the device.
    loop_hooks = [
        hooks.LossMonitor(every_steps=run.batches_per_epoch),
        hooks.EpochTimer(),
        log,
        hooks.Evaluation(args.eval_every),
        EvaluationLog(log, args.topk),
    ]
    train_loop(run, num_epochs=args.epochs, hooks=loop_hooks)

    epochs, evaluations = log.epochs, log.evaluations
    train_times = [record.get("extrapolated_train_s", record["train_s"]) for record in epochs]
    clean = [value for value, record in zip(train_times, epochs, strict=True) if not record["contended"]]
    summary = {
        "median_epoch_train_s": float(np.median(train_times)),
        "median_epoch_train_s_uncontended": float(np.median(clean)) if clean else None,
        "contended_epochs": sum(record["contended"] for record in epochs),
        "median_ms_per_batch": float(np.median([r["train_s"] / r["n_batches"] * 1000 for r in epochs])),
        "median_eval_s": float(np.median([e["eval_s"] for e in evaluations])) if evaluations else None,
        "final_recall": evaluations[-1]["recall"] if evaluations else None,
        "final_ndcg": evaluations[-1]["ndcg"] if evaluations else None,
        "best_recall": max(e["recall"] for e in evaluations) if evaluations else None,
        "best_ndcg": max(e["ndcg"] for e in evaluations) if evaluations else None,
        "peak_rss_mib": peak_rss_mib(),
        "epochs_run": len(epochs),
        "wall_s": time.perf_counter() - log.run_started,
        "partial_epochs": bool(args.max_batches and args.max_batches < run.batches_per_epoch),
    }
    print("SUMMARY " + json.dumps(summary), flush=True)
    with open(args.out, "w") as handle:
        json.dump(
            {
                "args": vars(args),
                "data": info,
                "env": environment,
                "setup_s": setup_seconds,
                "epochs": epochs,
                "evals": evaluations,
                "summary": summary,
            },
            handle,
            indent=1,
        )


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
