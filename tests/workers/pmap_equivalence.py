"""Trains a few steps of a tiny model with the library's run and loop on every local device and
writes the parameters and losses, one `.npz` per loss.

    XLA_FLAGS=--xla_force_host_platform_device_count=N python tests/workers/pmap_equivalence.py OUT bpr bce softmax

Used by tests/test_steps.py: N=1 and N=2 must give the same parameters (`OUT_<loss>.npz`).
"""

import sys

import jax
import numpy as np

from graphrec_jax.config import default_config
from graphrec_jax.data.types import Dataset, IdMap, Interactions
from graphrec_jax.training.hooks import StepLimit
from graphrec_jax.training.loop import train_loop
from graphrec_jax.training.run import build_run


def tiny_dataset() -> Dataset:
    rng = np.random.default_rng(0)
    num_users, num_items = 30, 20
    pairs = {
        (int(u), int(i)) for u, i in zip(rng.integers(0, num_users, 200), rng.integers(0, num_items, 200), strict=False)
    }
    users, items = (np.array(column, np.int32) for column in zip(*sorted(pairs), strict=False))
    return Dataset(
        IdMap("user", np.arange(num_users)), IdMap("item", np.arange(num_items)), Interactions(users, items), {}
    )


def run(loss: str, num_steps: int = 6, steps_per_call: int = 1):
    config = default_config()
    config.model.embedding_dim = 8
    config.model.num_layers = 2
    config.train.loss = loss
    config.train.num_negatives = 2
    config.train.batch_size = 64  # over ~200 triples: the last batch is partial, so padding is exercised
    config.train.negative_items = "all"
    config.train.progress_bar = False
    config.train.steps_per_call = steps_per_call
    training = build_run(config, tiny_dataset())
    limit = StepLimit(num_steps)
    train_loop(training, num_epochs=2, hooks=[limit])
    return training.params(), limit.losses


def main():
    arguments = sys.argv[1:]
    steps_per_call = 1
    if "--steps-per-call" in arguments:
        at = arguments.index("--steps-per-call")
        steps_per_call = int(arguments[at + 1])
        del arguments[at : at + 2]
    out, losses = arguments[0], arguments[1:] or ["bpr"]
    for loss in losses:
        params, values = run(loss, steps_per_call=steps_per_call)
        flat = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
        np.savez(f"{out}_{loss}.npz", losses=np.asarray(values), devices=jax.local_device_count(), **flat)


if __name__ == "__main__":
    main()
