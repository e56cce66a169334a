"""Latency of graphrec_jax.serving.diversity.rerank after compilation: MMR and DPP on random pools.

  python bench/rerank_latency.py                                  # 1,024 users, pool 200 -> k 20, 64-d
  python bench/rerank_latency.py --users 4096 --window 10 --repeats 50

Relevance is random normal, features random unit vectors (cosine similarity). Each configuration is
compiled and run once to warm up, then timed `--repeats` times with `block_until_ready`; the table shows
the median and the minimum, and the last line is `SUMMARY {json}` with the medians in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

from graphrec_jax.serving.diversity import rerank


def time_rerank(relevance, features, k: int, repeats: int, **options) -> list[float]:
    """Wall times in ms of `repeats` calls after one warm-up call (which compiles)."""
    rerank(relevance, features, k, **options).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        rerank(relevance, features, k, **options).block_until_ready()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1024)
    parser.add_argument("--pool", type=int, default=200)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--diversity", type=float, default=0.5)
    parser.add_argument("--window", type=int, default=0, help="also time the DPP with this window (0: skip)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    relevance = jax.device_put(rng.normal(size=(args.users, args.pool)).astype(np.float32))
    features = rng.normal(size=(args.users, args.pool, args.dim)).astype(np.float32)
    features = jax.device_put(features / np.linalg.norm(features, axis=-1, keepdims=True))

    runs = {
        "relevance_order": dict(diversity=0.0, method="dpp"),
        "mmr": dict(diversity=args.diversity, method="mmr"),
        "dpp": dict(diversity=args.diversity, method="dpp"),
    }
    if args.window:
        runs[f"dpp_window{args.window}"] = dict(diversity=args.diversity, method="dpp", window=args.window)

    print(f"{jax.default_backend()} | users {args.users} | pool {args.pool} -> k {args.k} | dim {args.dim}")
    print(f"{'method':<18}{'median ms':>12}{'min ms':>10}")
    summary = {}
    for name, options in runs.items():
        times = time_rerank(relevance, features, args.k, args.repeats, **options)
        summary[f"{name}_latency_ms"] = round(statistics.median(times), 2)
        print(f"{name:<18}{statistics.median(times):>12.2f}{min(times):>10.2f}")
    summary.update(users=args.users, pool=args.pool, k=args.k, dim=args.dim, repeats=args.repeats)
    print("SUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    main()
