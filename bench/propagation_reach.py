"""How much of the graph each LightGCN layer must touch for one batch's loss: the ceiling on what
restricting propagation to the rows the loss reads can save.

    python bench/propagation_reach.py --data ../shared/datasets/lightgcn-gowalla --out reach.json

The loss reads the final representations of a batch's rows only (its users, positives and
negatives). With L layers, layer k's output is needed on S_{L-k}: S_0 is the batch's rows and
S_j = S_{j-1} plus its neighbours, so layer L needs only the batch's rows (the run builder already
computes the last layer for them alone), layer L-1 their neighbours, and so on. Computing layer k
on S_{L-k} takes the edges of those rows. This script draws `--batches` batches with the training
sampler (LightGCN's protocol: 2,048 triples, negatives uniform over all items) and reports, per
layer, the share of the graph's directed edges (and rows) a restricted propagation would touch,
forward; the backward pass touches the same edges once more.

Prints a table and `SUMMARY {"edge_share_per_layer": [...], "row_share_per_layer": [...],
"forward_edge_share": ..., "restricted_last_layer_edge_share": ...}` (means over batches; layer 1
first); "restricted_last_layer_edge_share" is what the run builder's step touches today (every
layer full but the last).
"""

from __future__ import annotations

import argparse
import json
import runpy
from pathlib import Path

import numpy as np
import scipy.sparse

from graphrec_jax.data.prepare import prepare_dataset
from graphrec_jax.training.batches import TripleSampler

REPO = Path(__file__).resolve().parent.parent


def adjacency(dataset) -> scipy.sparse.csr_matrix:
    """The symmetric user-item adjacency over users then items, `[n, n]`, unweighted."""
    num_users, num_items = dataset.num_users, dataset.num_items
    users, items = dataset.train.users.astype(np.int64), dataset.train.items.astype(np.int64) + num_users
    n = num_users + num_items
    rows, cols = np.concatenate([users, items]), np.concatenate([items, users])
    graph = scipy.sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n))
    graph.sum_duplicates()
    return graph


def reach(graph: scipy.sparse.csr_matrix, rows: np.ndarray, num_layers: int) -> tuple[list[float], list[float]]:
    """(edge share, row share) of layer 1 .. L when layer k is computed on S_{L-k} alone."""
    n = graph.shape[0]
    degree = np.diff(graph.indptr)
    needed = np.zeros(n, bool)
    needed[rows] = True
    sets = [needed.copy()]  # S_0 .. S_{L-1}
    for _ in range(num_layers - 1):
        step = graph @ needed.astype(np.float32)
        needed = needed | (step > 0)
        sets.append(needed.copy())
    edges, shares = [], []
    for layer in range(1, num_layers + 1):
        on = sets[num_layers - layer]
        edges.append(float(degree[on].sum() / graph.nnz))
        shares.append(float(on.mean()))
    return edges, shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a LightGCN-format folder (train.txt, test.txt)")
    parser.add_argument("--out", default="reach.json")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()

    config = runpy.run_path(str(REPO / "configs" / "gowalla.py"))["get_config"]()
    config.data.path = args.data
    config.data.name = Path(args.data).name
    dataset = prepare_dataset(config.data)
    graph = adjacency(dataset)
    sampler = TripleSampler(dataset.num_users, dataset.num_items, dataset.train.users, dataset.train.items, args.seed)
    triples = sampler.sample_epoch(0)
    num_users = dataset.num_users
    edge_shares, row_shares = [], []
    for batch in range(args.batches):
        part = slice(batch * args.batch_size, (batch + 1) * args.batch_size)
        rows = np.unique(
            np.concatenate(
                [
                    triples["users"][part],
                    triples["positives"][part] + num_users,
                    triples["negatives"][part].ravel() + num_users,
                ]
            )
        )
        edges, shares = reach(graph, rows, args.layers)
        edge_shares.append(edges)
        row_shares.append(shares)
    edge_share = np.mean(edge_shares, axis=0)
    row_share = np.mean(row_shares, axis=0)
    print(
        f"{dataset.name}: {graph.shape[0]} nodes, {graph.nnz} directed edges; {args.batches} batches of "
        f"{args.batch_size} triples, {args.layers} layers"
    )
    print(f"{'layer':>5s} {'rows needed':>12s} {'edges touched':>14s}")
    for layer in range(args.layers):
        print(f"{layer + 1:5d} {row_share[layer]:12.3f} {edge_share[layer]:14.3f}")
    summary = {
        "edge_share_per_layer": [round(float(v), 4) for v in edge_share],
        "row_share_per_layer": [round(float(v), 4) for v in row_share],
        "forward_edge_share": round(float(edge_share.mean()), 4),
        "restricted_last_layer_edge_share": round(float((args.layers - 1 + edge_share[-1]) / args.layers), 4),
    }
    Path(args.out).write_text(json.dumps({"args": vars(args), "summary": summary}, indent=1))
    print("SUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    main()
