"""Sampled versus full-graph training: epoch time, peak memory and Recall@20, plus scale checks.

    python bench/sampled.py --epochs 20                     # Gowalla from ../shared/datasets
    python bench/sampled.py --gowalla-dir DIR --epochs 2 --synthetic 1000000,3000000,10000000

Gowalla, LightGCN protocol (dim 64, Adam 1e-3, batch 2048, L2 1e-4, one negative): full-graph
training with 3 layers against sampled training with 2 fanout layers (`--fanouts`), each in
its own subprocess so that peak RSS (ru_maxrss, per process) belongs to one mode; Recall@20
on the test split after `--epochs` epochs (the sampled model is evaluated by full-graph
layer-wise inference). Then the step time with and without the prefetching host producer,
sampled training on generated power-law graphs of the `--synthetic` sizes (peak RSS and step
time, the epoch time extrapolated), and the cost of scoring 1K users against 1M items.
Every worker runs with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (`--no-hugepages` to drop it):
XLA's CPU buffers over 32 MB are fresh mmaps, and huge pages cut their page faults ~50x.

Prints a table, then `SUMMARY {json}` with keys full, sampled (epoch_s, peak_rss_mib,
recall), prefetch, synthetic (interactions, peak_rss_mib, step_s, epoch_s, graph_mib, ...)
and scoring. Skips Gowalla with a message when its folder is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from measure import cpu_snapshot, peak_rss_mib  # bench/measure.py

from graphrec_jax.training.loop import Hook

REPO = Path(__file__).resolve().parent.parent


def gowalla_config(args, mode: str, prefetch: int):
    from configs import gowalla

    config = gowalla.get_config()
    config.data.path = str(args.gowalla_dir)
    config.seed = args.seed
    config.sampling.mode = mode
    config.sampling.prefetch_batches = prefetch
    if mode == "sampled":
        config.sampling.fanouts = args.fanouts
        config.sampling.method = args.method
        config.model.num_layers = len(args.fanouts.split(","))
    config.train.num_epochs = args.epochs
    return config


class EpochCpu(Hook):
    """A benchmark hook: per-epoch wall and CPU time, other jobs' load, and (with `max_steps`)
    the wall and CPU time of single steps, each waited for."""

    def __init__(self, max_steps: int = 0):
        self.max_steps = max_steps
        self.epoch_seconds, self.epoch_cpu, self.other_load, self.step_seconds = [], [], [], []
        self.cpu_started = cpu_snapshot()[1]
        self.loss = float("nan")

    def on_epoch_start(self, loop):
        self.before = cpu_snapshot()
        self.last = time.perf_counter()

    def after_step(self, loop, metrics):
        if not self.max_steps:
            return
        import jax

        jax.block_until_ready(metrics)  # timing single steps (waiting for the batch included)
        self.step_seconds.append(time.perf_counter() - self.last)
        self.last = time.perf_counter()
        if len(self.step_seconds) == 3:  # compiled and warm: start counting CPU time
            self.cpu_started = cpu_snapshot()[1]
        if len(self.step_seconds) == self.max_steps:
            loop.end_epoch = True

    def on_epoch_end(self, loop):
        after = cpu_snapshot()
        self.epoch_seconds.append(loop.record["epoch_seconds"])
        self.epoch_cpu.append(after[1] - self.before[1])
        self.other_load.append(max(0.0, (after[2] - self.before[2]) - self.epoch_cpu[-1]) / (after[0] - self.before[0]))
        self.loss = loop.record["loss"]
        print(
            f"  epoch {loop.epoch + 1}: {self.epoch_seconds[-1]:.1f}s (cpu {self.epoch_cpu[-1]:.1f}s, other jobs "
            f"{self.other_load[-1]:.2f} cores) loss {self.loss:.4f} rss {peak_rss_mib():.0f} MiB",
            flush=True,
        )


def train_worker(config, *, epochs: int, max_steps: int = 0, evaluate: bool = True, dataset=None) -> dict:
    """Trains with the library's run and loop (no checkpoints); times every epoch."""
    from graphrec_jax.training import hooks
    from graphrec_jax.training.loop import train_loop
    from graphrec_jax.training.run import build_run

    run = build_run(config, dataset)
    timer = EpochCpu(max_steps)
    loop_hooks = [hooks.LossMonitor(run.batches_per_epoch), hooks.EpochTimer(), timer]
    train_loop(run, num_epochs=epochs, hooks=loop_hooks)
    result = {
        "batches_per_epoch": run.batches_per_epoch,
        "epoch_s": float(np.median(timer.epoch_seconds)),
        "epoch_cpu_s": float(np.median(timer.epoch_cpu)),
        "other_load_cores": float(np.median(timer.other_load)),
        "epoch_seconds": timer.epoch_seconds,
        "loss": timer.loss,
    }
    if max_steps:
        result["step_s"] = float(np.median(timer.step_seconds[3:] or timer.step_seconds))
        # CPU seconds per step, host work included: robust to other jobs on the machine
        result["step_cpu_s"] = (cpu_snapshot()[1] - timer.cpu_started) / max(len(timer.step_seconds) - 3, 1)
    if evaluate:
        started = time.perf_counter()
        metrics = run.evaluate()
        result.update(
            recall=metrics["test/recall@20"], ndcg=metrics["test/ndcg@20"], eval_s=time.perf_counter() - started
        )
    result["peak_rss_mib"] = peak_rss_mib()
    result["run"] = run
    return result


def power_law_interactions(num_interactions: int, seed: int = 0) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs with power-law user activity and item popularity.

    About 20 interactions per user and 50 per item on average; vectorised, a few seconds for
    10M. Returns (num_users, num_items, users int32, items int32)."""
    num_users, num_items = max(num_interactions // 20, 10), max(num_interactions // 50, 10)
    rng = np.random.default_rng(seed)
    draws = int(num_interactions * 1.15)
    # Inverse-transform samples of a bounded Pareto: index = n * u^3 puts the mass on low indices.
    users = (num_users * rng.random(draws) ** 2.0).astype(np.int64)
    items = (num_items * rng.random(draws) ** 3.0).astype(np.int64)
    users = rng.permutation(num_users)[users]  # popular ids spread over the id range
    items = rng.permutation(num_items)[items]
    keys = np.unique(users * num_items + items)
    keys = keys[rng.permutation(len(keys))[:num_interactions]]
    keys.sort()
    return num_users, num_items, (keys // num_items).astype(np.int32), (keys % num_items).astype(np.int32)


def synthetic_worker(args, num_interactions: int) -> dict:
    """Sampled training steps on a generated graph: peak RSS, step time, the graph's own bytes."""
    import jax

    from graphrec_jax.config import default_config
    from graphrec_jax.data.types import Dataset, IdMap, Interactions

    started = time.perf_counter()
    num_users, num_items, users, items = power_law_interactions(num_interactions, args.seed)
    dataset = Dataset(
        user_map=IdMap("user", np.arange(num_users)),
        item_map=IdMap("item", np.arange(num_items)),
        train=Interactions(users, items),
        evaluation={},
        name="power-law",
    )
    config = default_config()
    config.seed = args.seed
    config.sampling.mode = "sampled"
    config.sampling.fanouts = args.fanouts
    config.model.num_layers = len(args.fanouts.split(","))
    config.train.negative_items = "all"
    config.train.progress_bar = False
    timed = train_worker(config, epochs=1, max_steps=args.synthetic_steps, evaluate=False, dataset=dataset)
    run = timed.pop("run")
    graph_bytes = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(run.setup.graph))
    source = run.source.source  # under the producer
    return {
        "interactions": int(len(users)),
        "nodes": int(num_users + num_items),
        "graph_mib": graph_bytes / 2**20,
        "embedding_mib": (num_users + num_items) * 64 * 4 / 2**20,
        "step_s": timed["step_s"],
        "epoch_s": timed["step_s"] * run.batches_per_epoch,
        "setup_s": time.perf_counter() - started - sum(timed["epoch_seconds"]),
        "node_budget": source.node_budget,
        "edge_budget": source.edge_budget,
        "peak_rss_mib": peak_rss_mib(),
        "loss": timed["loss"],
    }


def scoring_worker(args) -> dict:
    """Milliseconds to rank 1024 users against 1M items of dim 64 (fused top-20)."""
    import jax

    from graphrec_jax import kernels

    rng = np.random.default_rng(0)
    queries = jax.numpy.asarray(rng.normal(size=(1024, 64)).astype(np.float32))
    items = jax.numpy.asarray(rng.normal(size=(1_000_000, 64)).astype(np.float32))
    rank = jax.jit(lambda q, x: kernels.top_k_scores(q, x, 20))
    jax.block_until_ready(rank(queries, items))
    times = []
    for _ in range(5):
        started = time.perf_counter()
        jax.block_until_ready(rank(queries, items))
        times.append(time.perf_counter() - started)
    return {"ms_per_1k_users_1m_items_d64": 1000 * float(np.median(times)), "peak_rss_mib": peak_rss_mib()}


def run_worker(args) -> dict:
    if args.worker == "gowalla":
        config = gowalla_config(args, args.mode, args.prefetch)
        result = train_worker(config, epochs=args.epochs)
        result.pop("run")
        return result
    if args.worker == "prefetch":
        result = {}
        for prefetch in (0, 2):
            config = gowalla_config(args, args.mode, prefetch)
            timed = train_worker(config, epochs=1, max_steps=args.prefetch_steps, evaluate=False)
            timed.pop("run")
            result[f"prefetch_{prefetch}_step_s"] = timed["step_s"]
            result[f"prefetch_{prefetch}_step_cpu_s"] = timed["step_cpu_s"]
        result["batches_per_epoch"] = timed["batches_per_epoch"]
        return result
    if args.worker == "synthetic":
        return synthetic_worker(args, args.interactions)
    return scoring_worker(args)


def spawn(args, *extra: str) -> dict:
    command = [sys.executable, __file__, *extra, f"--gowalla-dir={args.gowalla_dir}", f"--epochs={args.epochs}"]
    command += [f"--fanouts={args.fanouts}", f"--method={args.method}", f"--seed={args.seed}"]
    command += [f"--prefetch-steps={args.prefetch_steps}", f"--synthetic-steps={args.synthetic_steps}"]
    print("$ " + " ".join(command[1:]), flush=True)
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    if args.hugepages:  # XLA's CPU buffers above 32 MB are fresh mmaps: huge pages cut their page faults
        environment["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    process = subprocess.run(command, env=environment, capture_output=True, text=True)
    for line in process.stdout.splitlines():
        if not line.startswith("RESULT "):
            print(line, flush=True)
    if process.returncode != 0:
        print(process.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"worker {extra} failed")
    return json.loads(process.stdout.split("RESULT ", 1)[1].splitlines()[0])


def main() -> None:
    from graphrec_jax.data import datasets_root

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gowalla-dir", type=Path, default=datasets_root() / "lightgcn-gowalla")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--fanouts", default="5,5", help="per-hop fanouts of the sampled mode")
    parser.add_argument("--method", default="uniform", choices=["uniform", "importance"])
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--synthetic", default="1000000,3000000,10000000", help="graph sizes; empty to skip")
    parser.add_argument("--synthetic-steps", type=int, default=30)
    parser.add_argument("--prefetch-steps", type=int, default=40)
    parser.add_argument(
        "--hugepages", action=argparse.BooleanOptionalAction, default=True, help="GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: gowalla (or full, sampled),prefetch,synthetic,scoring",
    )
    parser.add_argument("--worker", choices=["gowalla", "prefetch", "synthetic", "scoring"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="sampled", help=argparse.SUPPRESS)
    parser.add_argument("--prefetch", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--interactions", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_worker(args)), flush=True)
        return

    skip = set(filter(None, args.skip.split(",")))
    summary: dict = {}
    if "gowalla" not in skip:
        if not (args.gowalla_dir / "train.txt").is_file():
            print(f"skipping Gowalla: {args.gowalla_dir}/train.txt is absent (pass --gowalla-dir)")
        else:
            for mode in ("full", "sampled"):
                if mode not in skip:
                    summary[mode] = spawn(args, "--worker=gowalla", f"--mode={mode}")
    if "prefetch" not in skip and (args.gowalla_dir / "train.txt").is_file():
        summary["prefetch"] = {mode: spawn(args, "--worker=prefetch", f"--mode={mode}") for mode in ("full", "sampled")}
    if "synthetic" not in skip and args.synthetic:
        sizes = [int(size) for size in args.synthetic.split(",")]
        summary["synthetic"] = [spawn(args, "--worker=synthetic", f"--interactions={size}") for size in sizes]
    if "scoring" not in skip:
        summary["scoring"] = spawn(args, "--worker=scoring")

    print()
    print(f"{'run':<28}{'epoch s':>10}{'step s':>9}{'peak RSS MiB':>14}{'Recall@20':>11}")
    for mode in ("full", "sampled"):
        if mode in summary:
            row = summary[mode]
            name = f"gowalla {mode}"
            print(f"{name:<28}{row['epoch_s']:>10.1f}{'':>9}{row['peak_rss_mib']:>14.0f}{row['recall']:>11.4f}")
    for mode, row in summary.get("prefetch", {}).items():
        for prefetch in (0, 2):
            name = f"gowalla {mode} prefetch={prefetch}"
            cpu = row[f"prefetch_{prefetch}_step_cpu_s"]
            print(f"{name:<28}{'':>10}{row[f'prefetch_{prefetch}_step_s']:>9.3f}   (CPU {cpu:.3f} s/step)")
    for row in summary.get("synthetic", []):
        name = f"synthetic {row['interactions'] / 1e6:.1f}M (graph {row['graph_mib']:.0f} MiB)"
        print(f"{name:<28}{row['epoch_s']:>10.1f}{row['step_s']:>9.3f}{row['peak_rss_mib']:>14.0f}")
    if "scoring" in summary:
        print(f"top-20 of 1K users x 1M items x 64: {summary['scoring']['ms_per_1k_users_1m_items_d64']:.0f} ms")
    print("SUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    main()
