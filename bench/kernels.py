"""Benchmark of graphrec_jax.kernels: native CPU kernels against the XLA implementations.

Uses the LightGCN Gowalla split when present (users 29,858, items 40,981), else a random
bipartite graph of the same size, and prints a table of median wall times:

  python bench/kernels.py                          # ../shared/datasets/lightgcn-gowalla
  python bench/kernels.py --gowalla-dir /data/gowalla --repeats 7 --chunk-size 2048
  GRAPHREC_DATASETS=/data python bench/kernels.py  # /data/lightgcn-gowalla

Rows: csr_matmul on the symmetric normalised adjacency (forward, and forward + gradient),
csr_matmul_rows for a training batch (forward + gradient), and the full-ranking top-k of every
user over all items with the training items excluded, called chunk by chunk from one jitted
function (backend `native-fp32`: the native kernel with its bfloat16 screen turned off, the
same results). Times include dispatch; each jitted function is warmed up first.

Then the memory side of the forward product: its effective bandwidth (bytes it must move:
the gathered rows, indices, weights and the output, over its time) against the machine's copy
bandwidth (a 512 MB copy, numpy on one thread and XLA on all), and the same product with the
nodes reordered (by degree, and by reverse Cuthill-McKee when scipy is present) and with the
feature dimension processed in blocks (one call per block of columns). Last line:
`SUMMARY {"ops": [{"op", "backend", "ms"}], "copy_gbps", "csr_matmul_gbps", "layouts": {NAME: ms},
"feature_blocks": {WIDTH: ms}}`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from graphrec_jax.graph.sparse import ragged_arange
from graphrec_jax.host_memory import use_huge_pages
from graphrec_jax.kernels import csr_matmul, csr_matmul_rows, native, native_available, top_k_scores

NUM_USERS, NUM_ITEMS = 29_858, 40_981


def default_gowalla_dir() -> Path:
    root = os.environ.get("GRAPHREC_DATASETS")
    if root:
        return Path(root) / "lightgcn-gowalla"
    return Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "lightgcn-gowalla"


def load_interactions(gowalla_dir: Path, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(users, items) int32 pairs of the training interactions, and where they came from."""
    train = gowalla_dir / "train.txt"
    if train.exists():
        users, items = [], []
        with open(train) as lines:
            for line in lines:
                fields = line.split()
                if len(fields) > 1:
                    users.extend([int(fields[0])] * (len(fields) - 1))
                    items.extend(int(item) for item in fields[1:])
        return np.asarray(users, np.int32), np.asarray(items, np.int32), str(train)
    rng = np.random.default_rng(seed)
    num_pairs = 810_128  # as many as Gowalla's training split
    # Power-law item popularity, like real interaction data.
    popularity = rng.permutation(1.0 / np.arange(1, NUM_ITEMS + 1) ** 0.7)
    pairs = np.zeros((0, 2), np.int64)
    while pairs.shape[0] < num_pairs:  # redraw the duplicates
        users = rng.integers(0, NUM_USERS, num_pairs)
        items = rng.choice(NUM_ITEMS, size=num_pairs, p=popularity / popularity.sum())
        pairs = np.unique(np.concatenate([pairs, np.stack([users, items], 1)]), axis=0)
    pairs = pairs[rng.permutation(pairs.shape[0])[:num_pairs]]
    return pairs[:, 0].astype(np.int32), pairs[:, 1].astype(np.int32), "random graph (no Gowalla data)"


def normalized_adjacency(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, ...]:
    """CSR arrays of D^-1/2 A D^-1/2 over users + items (symmetric)."""
    num_nodes = NUM_USERS + NUM_ITEMS
    senders = np.concatenate([users, items + NUM_USERS])
    receivers = np.concatenate([items + NUM_USERS, users])
    order = np.lexsort((senders, receivers))
    senders, receivers = senders[order], receivers[order]
    degree = np.bincount(receivers, minlength=num_nodes).astype(np.float32)
    inverse_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1.0)), 0.0).astype(np.float32)
    weights = inverse_sqrt[senders] * inverse_sqrt[receivers]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(receivers, minlength=num_nodes))]).astype(np.int32)
    return offsets, senders.astype(np.int32), weights.astype(np.float32)


def median_ms(fn, repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time of this process (all threads), in ms.

    On a shared machine the CPU time, divided by the threads in use, estimates the wall time
    the op would take alone.
    """
    jax.block_until_ready(fn())  # compile and warm up
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


Row = tuple[str, str, tuple[float, float]]


def bench_propagation(offsets, neighbors, weights, backends, repeats, rng) -> list[Row]:
    num_nodes = offsets.shape[0] - 1
    x = jnp.asarray(rng.standard_normal((num_nodes, 64)).astype(np.float32))
    graph = tuple(jnp.asarray(a) for a in (offsets, neighbors, weights))
    # A training batch: 2048 users and 2048 items, the rows a BPR loss needs.
    rows = np.concatenate([rng.integers(0, NUM_USERS, 2048), rng.integers(NUM_USERS, num_nodes, 2048)])
    rows = jnp.asarray(rows.astype(np.int32))
    num_edges = int(np.sum(np.diff(offsets)[np.asarray(rows)]))
    results = []
    for backend in backends:
        forward = jax.jit(lambda x, b=backend: csr_matmul(*graph, x, backend=b))
        gradient = jax.jit(jax.grad(lambda x, b=backend: jnp.sum(csr_matmul(*graph, x, backend=b) ** 2)))
        rows_gradient = jax.jit(
            jax.grad(lambda x, b=backend: jnp.sum(csr_matmul_rows(*graph, x, rows, backend=b) ** 2))
        )
        results.append(("csr_matmul d=64", backend, median_ms(lambda f=forward: f(x), repeats)))
        results.append(("csr_matmul d=64 fwd+grad", backend, median_ms(lambda f=gradient: f(x), repeats)))
        results.append(
            (
                f"csr_matmul_rows 4096 rows ({num_edges} edges) fwd+grad",
                backend,
                median_ms(lambda f=rows_gradient: f(x), repeats),
            )
        )
    return results


def copy_bandwidth_gbps(repeats: int, megabytes: int = 512) -> dict[str, float]:
    """GB/s of copying a `megabytes` array (read + write counted), numpy (one thread) and XLA."""
    source = np.ones(megabytes * 2**20 // 4, np.float32)
    target = np.empty_like(source)
    np.copyto(target, source)  # first touch
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        seconds.append(time.perf_counter() - start)
    moved = 2 * source.nbytes / 1e9
    x = jnp.asarray(source)
    copy = jax.jit(lambda x: x * 2.0)
    xla_ms = median_ms(lambda: copy(x), repeats)[0]
    return {"numpy_1_thread": moved / statistics.median(seconds), "xla": moved / (xla_ms / 1000)}


def forward_bytes(offsets: np.ndarray, d: int) -> int:
    """Bytes a CSR x dense forward product must move at the least: every gathered row, the
    indices and weights, the offsets, and the output."""
    nnz, rows = int(offsets[-1]), len(offsets) - 1
    return nnz * (4 * d + 8) + rows * (4 * d + 4)


def permuted(offsets, neighbors, weights, order: np.ndarray) -> tuple[np.ndarray, ...]:
    """The CSR of P A P^T for the node order `order` (new node i is old node order[i])."""
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    lengths = np.diff(offsets)[order]
    starts = offsets[:-1][order]
    entries = ragged_arange(starts, lengths)
    new_neighbors = position[neighbors[entries]]
    new_weights = weights[entries]
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    row = np.repeat(np.arange(len(order)), lengths)
    sort = np.lexsort((new_neighbors, row))  # columns ascending within each row
    return new_offsets, new_neighbors[sort].astype(np.int32), new_weights[sort]


def node_orders(offsets, neighbors) -> dict[str, np.ndarray]:
    """Node orders to compare: as built, by degree (descending), reverse Cuthill-McKee."""
    num_nodes = len(offsets) - 1
    orders = {
        "as built": np.arange(num_nodes),
        "by degree": np.argsort(-np.diff(offsets), kind="stable"),
    }
    try:
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import reverse_cuthill_mckee
    except ImportError:
        return orders
    matrix = csr_matrix((np.ones(len(neighbors), np.int8), neighbors, offsets), shape=(num_nodes, num_nodes))
    orders["reverse Cuthill-McKee"] = np.asarray(reverse_cuthill_mckee(matrix, symmetric_mode=True))
    return orders


def bench_memory(offsets, neighbors, weights, repeats, rng) -> dict:
    """Effective bandwidth of the native forward product, node orders and feature blocks."""
    num_nodes = offsets.shape[0] - 1
    x_host = rng.standard_normal((num_nodes, 64)).astype(np.float32)
    layouts = {}
    for name, order in node_orders(offsets, neighbors).items():
        graph = tuple(jnp.asarray(a) for a in permuted(offsets, neighbors, weights, order))
        forward = jax.jit(lambda x, graph=graph: csr_matmul(*graph, x, backend="native"))
        x = jnp.asarray(x_host[order])
        layouts[name] = median_ms(lambda f=forward, x=x: f(x), repeats)[0]
    graph = tuple(jnp.asarray(a) for a in (offsets, neighbors, weights))
    blocks = {}
    for width in (64, 32, 16):

        def blocked(x, width=width):
            parts = [csr_matmul(*graph, x[:, start : start + width], backend="native") for start in range(0, 64, width)]
            return jnp.concatenate(parts, axis=1)

        blocked_fn = jax.jit(blocked)
        x = jnp.asarray(x_host)
        blocks[width] = median_ms(lambda f=blocked_fn, x=x: f(x), repeats)[0]
    return {"layouts": layouts, "feature_blocks": blocks, "bytes": forward_bytes(offsets, 64)}


def exclusion_chunks(users, items, chunk_size):
    """Per chunk of users: CSR exclusion lists padded to one static length."""
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    per_user = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=NUM_USERS))])
    chunks = []
    for first in range(0, NUM_USERS, chunk_size):
        stop = min(first + chunk_size, NUM_USERS)
        offsets = per_user[first : stop + 1] - per_user[first]
        offsets = np.pad(offsets, (0, chunk_size + 1 - offsets.shape[0]), mode="edge")
        chunks.append((first, offsets.astype(np.int32), items[per_user[first] : per_user[stop]]))
    padded_length = max(chunk[2].shape[0] for chunk in chunks)
    return [
        (first, offsets, np.pad(excluded, (0, padded_length - excluded.shape[0])).astype(np.int32))
        for first, offsets, excluded in chunks
    ]


def bench_ranking(users, items, backends, repeats, chunk_size, k, rng) -> list[Row]:
    user_embeddings = rng.standard_normal((NUM_USERS, 64)).astype(np.float32)
    item_embeddings = jnp.asarray(rng.standard_normal((NUM_ITEMS, 64)).astype(np.float32))
    padded_users = np.pad(user_embeddings, ((0, -NUM_USERS % chunk_size), (0, 0)))
    chunks = [
        (jnp.asarray(padded_users[first : first + chunk_size]), jnp.asarray(offsets), jnp.asarray(excluded))
        for first, offsets, excluded in exclusion_chunks(users, items, chunk_size)
    ]
    results = []
    for backend in backends:
        rank = jax.jit(
            lambda q, items, offsets, excluded, b=backend: top_k_scores(
                q, items, k, exclude_offsets=offsets, exclude_items=excluded, backend=b
            )
        )

        def run_all(rank=rank):
            return [rank(q, item_embeddings, offsets, excluded) for q, offsets, excluded in chunks]

        name = f"top_k_scores k={k} all {NUM_USERS} users, chunks of {chunk_size}"
        results.append((name, backend, median_ms(run_all, repeats)))
        if backend == "native" and native.top_k_screening_built():
            # The same kernel without its bfloat16 screen (identical results). Random normal
            # embeddings have nearly equal norms, the screen's worst case; on trained embeddings
            # see bench/lightgcn.py's evaluation.
            native.set_top_k_screening(False)
            try:
                results.append((name, "native-fp32", median_ms(run_all, repeats)))
            finally:
                native.set_top_k_screening(True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gowalla-dir", type=Path, default=default_gowalla_dir())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ranking-repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--backends", default="native,xla", help="comma-separated: native,xla")
    parser.add_argument("--skip-ranking", action="store_true")
    parser.add_argument("--skip-memory", action="store_true", help="skip the bandwidth, layout and block rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    backends = [b for b in args.backends.split(",") if b]
    if "native" in backends and not native_available():
        print("native kernels unavailable: benchmarking the XLA backend only")
        backends = [b for b in backends if b != "native"]
    rng = np.random.default_rng(args.seed)
    users, items, source = load_interactions(args.gowalla_dir, args.seed)
    offsets, neighbors, weights = normalized_adjacency(users, items)
    print(f"graph: {source}: {offsets.shape[0] - 1} nodes, {neighbors.shape[0]} directed edges")
    print(f"ranking: {NUM_USERS} users x {NUM_ITEMS} items, {users.shape[0]} excluded (training) pairs")
    print(f"device: {jax.devices()[0].device_kind}, threads: {os.environ.get('GRAPHREC_NUM_THREADS', 'default')}")

    results = bench_propagation(offsets, neighbors, weights, backends, args.repeats, rng)
    if not args.skip_ranking:
        results += bench_ranking(users, items, backends, args.ranking_repeats, args.chunk_size, args.k, rng)
    width = max(len(op) for op, _, _ in results)
    print(f"\n{'op':<{width}}  {'backend':<8}  {'median ms':>10}  {'cpu ms':>10}")
    for op, backend, (wall, cpu) in results:
        print(f"{op:<{width}}  {backend:<8}  {wall:>10.1f}  {cpu:>10.1f}")
    summary = {"ops": [{"op": op, "backend": backend, "ms": wall} for op, backend, (wall, _) in results]}
    if not args.skip_memory and "native" in backends:
        copy = copy_bandwidth_gbps(args.repeats)
        memory = bench_memory(offsets, neighbors, weights, args.repeats, rng)
        achieved = memory["bytes"] / 1e9 / (memory["layouts"]["as built"] / 1000)
        best_copy = max(copy.values())
        print(
            f"\ncopy bandwidth: {copy['numpy_1_thread']:.1f} GB/s (numpy, 1 thread), {copy['xla']:.1f} GB/s (XLA)"
            f"\ncsr_matmul forward, native: {memory['bytes'] / 1e6:.0f} MB moved at least, "
            f"{achieved:.1f} GB/s = {achieved / best_copy:.2f} x the copy bandwidth"
        )
        for name, ms in memory["layouts"].items():
            print(f"  node order {name:<22} {ms:8.1f} ms")
        for block, ms in memory["feature_blocks"].items():
            print(f"  feature blocks of {block:<3} columns     {ms:8.1f} ms")
        summary.update(
            copy_gbps=copy,
            csr_matmul_gbps=achieved,
            layouts=memory["layouts"],
            feature_blocks={str(key): value for key, value in memory["feature_blocks"].items()},
        )
    print("SUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
