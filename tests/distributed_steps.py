"""Runs a few train steps with the library's batch sources and writes the parameters.

    python tests/distributed_steps.py --out params                 # 1 process
    python tests/distributed_steps.py --out params \\
        --coordinator_address localhost:PORT --num_processes 2 --process_id I        # one of 2

Used by tests/test_distributed.py: 2 processes with 1 CPU device each must end with the
parameters of 1 process with 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=2).
Both batch sources run, full-graph then sampled; process 0 writes `OUT_full.npz` and
`OUT_sampled.npz` (the parameters and the losses).
"""

import argparse
import json

import jax
import numpy as np

from graphrec_jax import devices, steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, help="a .npz per mode: OUT_full.npz, OUT_sampled.npz")
    parser.add_argument("--num_steps", type=int, default=7)
    parser.add_argument("--coordinator_address")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    args = parser.parse_args()
    devices.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    report = {"process": jax.process_index(), "devices": jax.device_count()}
    for mode in ("full", "sampled"):
        params, losses = run(mode, args.num_steps)
        if devices.is_primary_process():
            flat = {
                "/".join(str(key.key) for key in path): value
                for path, value in jax.tree_util.tree_leaves_with_path(params)
            }
            np.savez(f"{args.out}_{mode}.npz", losses=np.asarray(losses), **flat)
        report[mode] = losses
    print(json.dumps(report))


def run(mode: str, num_steps: int):
    """`num_steps` steps of the test config in `mode`: (parameters, losses)."""
    from configs import test as test_config
    from graphrec_jax.data.prepare import prepare_dataset
    from graphrec_jax.train import build_setup, init_params, make_batch_source, make_optimizer, make_pmapped_train_step

    config = test_config.get_config()
    config.sampling.mode = mode
    config.sampling.fanouts = "4,3"
    dataset = prepare_dataset(config.data)
    setup = build_setup(config, dataset)
    optimizer = make_optimizer(config, setup)
    state = devices.replicate(steps.create_train_state(init_params(setup, config.seed), optimizer))
    source = make_batch_source(config, setup)
    constants = devices.replicate(source.constants(setup.graph, setup.text_features))
    train_step = make_pmapped_train_step(config, setup, optimizer)
    rng = devices.replicate(np.asarray(jax.random.PRNGKey(config.seed)))
    losses = []
    epoch = 0
    while len(losses) < num_steps:  # crosses an epoch boundary: 6 batches per epoch
        for batch in source.epoch(epoch):
            state, metrics = train_step(state, {**devices.shard(batch), **constants}, rng)
            losses.append(float(np.asarray(metrics["loss"])[0]))
            if len(losses) == num_steps:
                break
        epoch += 1
    return devices.unreplicate(state.params), losses


if __name__ == "__main__":
    main()
