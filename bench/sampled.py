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


def train_worker(config, *, epochs: int, max_steps: int = 0, evaluate: bool = True) -> dict:
    """Trains like `train.train_and_evaluate` without checkpoints; times every epoch."""
    import jax

    from graphrec_jax import devices, steps
    from graphrec_jax.config import validate_config
    from graphrec_jax.data.prepare import prepare_dataset
    from graphrec_jax.train import (
        build_setup,
        evaluate_model,
        init_params,
        make_batch_source,
        make_optimizer,
        make_pmapped_train_step,
    )

    validate_config(config)
    dataset = prepare_dataset(config.data)
    setup = build_setup(config, dataset)
    optimizer = make_optimizer(config, setup)
    state = devices.replicate(steps.create_train_state(init_params(setup, config.seed), optimizer))
    source = make_batch_source(config, setup)
    constants = devices.replicate(source.constants(setup.graph, setup.text_features))
    rng = devices.replicate(np.asarray(jax.random.PRNGKey(config.seed)))
    train_step = make_pmapped_train_step(config, setup, optimizer)
    epoch_seconds, epoch_cpu, other_load, step_seconds, losses = [], [], [], [], []
    cpu_started = cpu_snapshot()[1]
    for epoch in range(epochs):
        before = cpu_snapshot()
        started = last = time.perf_counter()
        for index, batch in enumerate(source.epoch(epoch)):
            if max_steps and index == max_steps:
                break
            state, metrics = train_step(state, {**devices.shard(batch), **constants}, rng)
            if max_steps:  # timing single steps (waiting for the batch included): wait for each
                jax.block_until_ready(metrics)
                step_seconds.append(time.perf_counter() - last)
                last = time.perf_counter()
                if index == 2:  # compiled and warm: start counting CPU time
                    cpu_started = cpu_snapshot()[1]
            losses.append(metrics["loss"])
        loss = float(np.asarray(losses[-1])[0])
        epoch_seconds.append(time.perf_counter() - started)
        after = cpu_snapshot()
        epoch_cpu.append(after[1] - before[1])
        other_load.append(max(0.0, (after[2] - before[2]) - epoch_cpu[-1]) / (after[0] - before[0]))
        print(
            f"  epoch {epoch + 1}: {epoch_seconds[-1]:.1f}s (cpu {epoch_cpu[-1]:.1f}s, other jobs "
            f"{other_load[-1]:.2f} cores) loss {loss:.4f} rss {peak_rss_mib():.0f} MiB",
            flush=True,
        )
    result = {
        "batches_per_epoch": source.batches_per_epoch,
        "epoch_s": float(np.median(epoch_seconds)),
        "epoch_cpu_s": float(np.median(epoch_cpu)),
        "other_load_cores": float(np.median(other_load)),
        "epoch_seconds": epoch_seconds,
        "loss": loss,
    }
    if max_steps:
        result["step_s"] = float(np.median(step_seconds[3:] or step_seconds))
        # CPU seconds per step, host work included: robust to other jobs on the machine
        result["step_cpu_s"] = (cpu_snapshot()[1] - cpu_started) / max(len(step_seconds) - 3, 1)
    if evaluate:
        started = time.perf_counter()
        metrics = evaluate_model(config, setup, devices.unreplicate(state.params))
        result.update(
            recall=metrics["test/recall@20"], ndcg=metrics["test/ndcg@20"], eval_s=time.perf_counter() - started
        )
    result["peak_rss_mib"] = peak_rss_mib()
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

    from graphrec_jax import devices, steps
    from graphrec_jax.config import default_config
    from graphrec_jax.graph import build_interaction_graph
    from graphrec_jax.model import build_model
    from graphrec_jax.neighbor_sampling import NeighborSampler, SampledSubgraphBatches
    from graphrec_jax.prefetch import PrefetchedBatches
    from graphrec_jax.sampling import TripleSampler

    started = time.perf_counter()
    num_users, num_items, users, items = power_law_interactions(num_interactions, args.seed)
    config = default_config()
    config.model.num_layers = len(args.fanouts.split(","))
    graph = build_interaction_graph(num_users, num_items, users, items)
    graph_bytes = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(graph))
    model = build_model(config.model, num_users + num_items)
    sampler = TripleSampler(num_users, num_items, users, items, seed=args.seed)
    neighbors = NeighborSampler(graph, num_users, [int(f) for f in args.fanouts.split(",")])
    source = SampledSubgraphBatches(sampler, neighbors, 2048, 1, devices.num_local_devices())
    source = PrefetchedBatches(source, 2)
    optimizer = steps.make_optimizer(config.train)
    rng = jax.random.PRNGKey(0)
    params = {"node_embedding": np.asarray(jax.random.normal(rng, (num_users + num_items, 64)) * 0.1, np.float32)}
    state = devices.replicate(steps.create_train_state(params, optimizer))
    constants = devices.replicate(source.constants())
    train_step = jax.pmap(
        steps.make_train_step(model, optimizer, config.train, num_users=num_users),
        axis_name=steps.AXIS,
        donate_argnums=(0,),
    )
    device_rng = devices.replicate(np.asarray(rng))
    setup_seconds = time.perf_counter() - started
    times = []
    last = time.perf_counter()
    for index, batch in enumerate(source.epoch(0)):
        if index == args.synthetic_steps:
            break
        state, metrics = train_step(state, {**devices.shard(batch), **constants}, device_rng)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - last)  # the wait for the next batch included
        last = time.perf_counter()
    step = float(np.median(times[3:] or times))
    return {
        "interactions": int(len(users)),
        "nodes": int(num_users + num_items),
        "graph_mib": graph_bytes / 2**20,
        "embedding_mib": (num_users + num_items) * 64 * 4 / 2**20,
        "step_s": step,
        "epoch_s": step * source.batches_per_epoch,
        "setup_s": setup_seconds,
        "node_budget": source.source.node_budget,
        "edge_budget": source.source.edge_budget,
        "peak_rss_mib": peak_rss_mib(),
        "loss": float(np.asarray(metrics["loss"])[0]),
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
        return train_worker(config, epochs=args.epochs)
    if args.worker == "prefetch":
        result = {}
        for prefetch in (0, 2):
            config = gowalla_config(args, args.mode, prefetch)
            timed = train_worker(config, epochs=1, max_steps=args.prefetch_steps, evaluate=False)
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
