"""LightGCN with the official LightGCN-PyTorch protocol, timed like the PyG reference.

    python bench/lightgcn.py --data ../shared/datasets/ml-100k/split --epochs 200 --eval-every 20 \
        --seed 2020 --out ml100k.json
    python bench/lightgcn.py --data ../shared/datasets/lightgcn-gowalla --epochs 3 --eval-every 1 --out gowalla.json

Protocol: dim 64, 3 layers, N(0, 0.1) init, Adam lr 1e-3, batch 2048, one uniform
(user, positive, negative) triple per training interaction per epoch, loss =
mean softplus(neg - pos) + 1e-4 * 0.5 * (||u0||^2 + ||p0||^2 + ||n0||^2) / B, full propagation
for every batch, full-ranking Recall@20 / NDCG@20 with training items masked.

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

from graphrec_jax import devices, steps
from graphrec_jax.config import default_config
from graphrec_jax.data.prepare import prepare_dataset
from graphrec_jax.evaluation import csr_by_user, evaluate_split
from graphrec_jax.graph import build_interaction_graph
from graphrec_jax.host_memory import use_huge_pages
from graphrec_jax.model import build_model
from graphrec_jax.sampling import TripleSampler, iterate_batches, num_batches


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
    parser.add_argument("--aggregation", default="auto", choices=["auto", "native", "segment_sum"])
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
    dataset = prepare_dataset(config.data)
    graph = build_interaction_graph(dataset.num_users, dataset.num_items, dataset.train.users, dataset.train.items)
    model = build_model(config.model, dataset.num_users + dataset.num_items)
    optimizer = steps.make_optimizer(config.train)
    params = jax.jit(model.init)(jax.random.PRNGKey(args.seed), graph)["params"]
    state = devices.replicate(steps.create_train_state(params, optimizer))
    constants = devices.replicate({"graph": graph})
    key = devices.replicate(np.asarray(jax.random.PRNGKey(args.seed)))
    train_step = jax.pmap(
        steps.make_train_step(model, optimizer, config.train, num_users=dataset.num_users),
        axis_name=steps.AXIS,
        donate_argnums=(0,),
    )
    representations = jax.jit(steps.make_representation_fn(model))
    sampler = TripleSampler(
        dataset.num_users, dataset.num_items, dataset.train.users, dataset.train.items, seed=args.seed
    )
    train_by_user = csr_by_user(dataset.train, dataset.num_users)
    num_devices = devices.num_local_devices()
    full_batches = num_batches(sampler.num_interactions, args.batch)
    setup_seconds = time.perf_counter() - setup_started
    info = {
        "dataset": os.path.abspath(args.data),
        "n_users": dataset.num_users,
        "n_items": dataset.num_items,
        "n_train": len(dataset.train),
        "n_test": len(dataset.evaluation["test"].interactions),
        "batches_per_epoch": full_batches,
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

    epochs, evaluations = [], []
    run_started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        before = cpu_snapshot()
        started = time.perf_counter()
        triples = sampler.sample_epoch(epoch - 1)
        sample_seconds = time.perf_counter() - started
        batch_started = time.perf_counter()
        batch_count = 0
        loss_values = []
        for batch in iterate_batches(triples, args.batch, num_devices):
            if args.max_batches and batch_count == args.max_batches:
                break
            state, metrics = train_step(state, {**devices.shard(batch), **constants}, key)
            loss_values.append(metrics["loss"])
            batch_count += 1
        loss = float(np.mean([np.asarray(value)[0] for value in loss_values]))  # waits for the last step
        batch_seconds = time.perf_counter() - batch_started
        train_seconds = time.perf_counter() - started
        record = {
            "epoch": epoch,
            "train_s": train_seconds,
            "sample_s": sample_seconds,
            "batches_s": batch_seconds,
            "n_batches": batch_count,
            "loss": loss,
            "contended": contended(before, cpu_snapshot()),
        }
        if batch_count < full_batches:
            record["extrapolated_train_s"] = sample_seconds + batch_seconds / batch_count * full_batches
        epochs.append(record)
        line = (
            f"epoch {epoch:4d} train {train_seconds:8.3f}s (sample {sample_seconds:.3f}s, {batch_count} batches "
            f"{batch_seconds / batch_count * 1000:.1f} ms/batch) loss {loss:.5f}"
        )
        if "extrapolated_train_s" in record:
            line += f" [partial epoch; extrapolated full epoch {record['extrapolated_train_s']:.1f}s]"
        out_of_time = args.time_budget_s > 0 and time.perf_counter() - run_started >= args.time_budget_s
        if args.eval_every > 0 and (epoch % args.eval_every == 0 or epoch == args.epochs or out_of_time):
            before_eval = cpu_snapshot()
            eval_started = time.perf_counter()
            params = devices.unreplicate(state.params)
            values = representations(params, graph)
            metrics = evaluate_split(
                values[: dataset.num_users],
                values[dataset.num_users :],
                dataset.evaluation["test"],
                train_by_user,
                [args.topk],
                chunk_size=args.eval_chunk,
                backend=_backend(args.aggregation),
            )
            evaluation = {
                "epoch": epoch,
                "recall": metrics[f"recall@{args.topk}"],
                "ndcg": metrics[f"ndcg@{args.topk}"],
                "precision": metrics[f"precision@{args.topk}"],
                "n_test_users": metrics["num_users"],
                "eval_s": time.perf_counter() - eval_started,
                "contended": contended(before_eval, cpu_snapshot()),
            }
            evaluations.append(evaluation)
            line += (
                f" | eval {evaluation['eval_s']:.3f}s recall@{args.topk} {evaluation['recall']:.5f} "
                f"ndcg@{args.topk} {evaluation['ndcg']:.5f}"
            )
        line += f" | peakRSS {peak_rss_mib():.0f} MiB"
        if record["contended"] or (evaluations and evaluations[-1]["epoch"] == epoch and evaluations[-1]["contended"]):
            line += " CONTENDED"
        print(line, flush=True)
        reached = evaluations and evaluations[-1]["epoch"] == epoch and args.target_recall > 0
        if reached and evaluations[-1]["recall"] >= args.target_recall:
            print(f"reached Recall@{args.topk} {args.target_recall} at epoch {epoch}", flush=True)
            break
        if out_of_time:
            print(f"time budget of {args.time_budget_s:.0f}s spent at epoch {epoch}", flush=True)
            break

    train_times = [record.get("extrapolated_train_s", record["train_s"]) for record in epochs]
    clean = [value for value, record in zip(train_times, epochs, strict=True) if not record["contended"]]
    summary = {
        "median_epoch_train_s": float(np.median(train_times)),
        "median_epoch_train_s_uncontended": float(np.median(clean)) if clean else None,
        "contended_epochs": sum(record["contended"] for record in epochs),
        "median_ms_per_batch": float(np.median([r["batches_s"] / r["n_batches"] * 1000 for r in epochs])),
        "median_eval_s": float(np.median([e["eval_s"] for e in evaluations])) if evaluations else None,
        "final_recall": evaluations[-1]["recall"] if evaluations else None,
        "final_ndcg": evaluations[-1]["ndcg"] if evaluations else None,
        "best_recall": max(e["recall"] for e in evaluations) if evaluations else None,
        "best_ndcg": max(e["ndcg"] for e in evaluations) if evaluations else None,
        "peak_rss_mib": peak_rss_mib(),
        "epochs_run": len(epochs),
        "wall_s": time.perf_counter() - run_started,
        "partial_epochs": bool(args.max_batches and args.max_batches < full_batches),
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


def _backend(aggregation: str) -> str:
    return {"auto": "auto", "native": "native", "segment_sum": "xla"}[aggregation]


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    main()
