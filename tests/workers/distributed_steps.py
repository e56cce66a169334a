"""Runs a few train steps with the library's run and loop and writes the parameters.

    python tests/workers/distributed_steps.py --out params                 # 1 process
    python tests/workers/distributed_steps.py --out params \\
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

from graphrec_jax import devices
from graphrec_jax.training.hooks import StepLimit
from graphrec_jax.training.loop import train_loop
from graphrec_jax.training.run import build_run


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

    config = test_config.get_config()
    config.sampling.mode = mode
    config.sampling.fanouts = "4,3"
    training = build_run(config)
    stop = StepLimit(num_steps)
    train_loop(training, num_epochs=num_steps, hooks=[stop])  # crosses an epoch boundary: 6 batches per epoch
    return training.params(), stop.losses


if __name__ == "__main__":
    main()
