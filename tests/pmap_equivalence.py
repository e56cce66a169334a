"""Runs a few train steps on 1 device and on 2 devices and prints the largest parameter gap.

Run with XLA_FLAGS=--xla_force_host_platform_device_count=2; used by tests/test_steps.py.
"""

import json
import sys

import jax
import numpy as np

from graphrec_jax import steps
from graphrec_jax.config import default_config
from graphrec_jax.graph import build_interaction_graph
from graphrec_jax.model import build_model
from graphrec_jax.sampling import TripleSampler, iterate_batches


def run(loss: str, devices: list, num_steps: int = 6):
    rng = np.random.default_rng(0)
    num_users, num_items = 30, 20
    pairs = {
        (int(u), int(i)) for u, i in zip(rng.integers(0, num_users, 200), rng.integers(0, num_items, 200), strict=False)
    }
    users, items = (np.array(column, np.int32) for column in zip(*sorted(pairs), strict=False))
    config = default_config()
    config.model.embedding_dim = 8
    config.model.num_layers = 2
    config.train.loss = loss
    config.train.num_negatives = 2
    graph = build_interaction_graph(num_users, num_items, users, items)
    model = build_model(config.model, num_users + num_items)
    optimizer = steps.make_optimizer(config.train)
    params = model.init(jax.random.PRNGKey(0), graph)["params"]
    state = steps.create_train_state(params, optimizer)
    count = len(devices)
    step = jax.pmap(
        steps.make_train_step(model, optimizer, config.train, num_users=num_users),
        axis_name=steps.AXIS,
        devices=devices,
    )
    replicate = lambda tree: jax.tree.map(lambda x: np.stack([np.asarray(x)] * count), tree)
    state = replicate(state)
    graph_r = replicate(graph)
    key = replicate(np.asarray(jax.random.PRNGKey(1)))
    triples = TripleSampler(num_users, num_items, users, items, seed=0).sample_epoch(0, 2)
    losses = []
    # batch 64 over 200-ish triples: the last batch is partial, so padding is exercised
    for index, batch in enumerate(iterate_batches(triples, 64, count)):
        if index == num_steps:
            break
        state, metrics = step(state, {**batch, "graph": graph_r}, key)
        losses.append(float(np.asarray(metrics["loss"])[0]))
    return jax.tree.map(lambda x: np.asarray(x)[0], state.params), losses


def main():
    devices = jax.local_devices()
    assert len(devices) == 2, f"need 2 devices, got {devices}"
    report = {}
    for loss in sys.argv[1:] or ["bpr"]:
        one, losses_one = run(loss, devices[:1])
        two, losses_two = run(loss, devices)
        gaps = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), one, two))
        report[loss] = {
            "max_param_gap": max(gaps),
            "loss_gap": float(np.max(np.abs(np.subtract(losses_one, losses_two)))),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
