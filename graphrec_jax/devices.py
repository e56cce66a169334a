"""Device placement for the pmapped steps, and JAX's multi-process runtime.

Arrays fed to a pmapped function carry a leading axis of size `jax.local_device_count()`.
Constants reused by every step (the graph, the text features) and the train state are
placed once with `replicate`; `unreplicate` brings one copy back to the host.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import numpy as np

log = logging.getLogger(__name__)

AXIS = "batch"  # the pmap axis of every mapped step

# Placing through a pmap with the steps' axis name gives arrays the exact sharding the steps
# return, so a step never recompiles for a state it produced itself.
_identity = jax.pmap(lambda tree: tree, axis_name=AXIS)


def num_local_devices() -> int:
    return jax.local_device_count()


def replicate(tree: Any) -> Any:
    """One copy of every leaf per local device: leaves become `[n_local_devices, ...]` device arrays."""
    count = jax.local_device_count()
    stacked = jax.tree.map(lambda leaf: np.broadcast_to(np.asarray(leaf), (count,) + np.shape(leaf)), tree)
    return _identity(stacked)


def shard(tree: Any) -> Any:
    """Places host arrays already shaped `[n_local_devices, ...]`, one slice per device."""
    return _identity(tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of every leaf, as host numpy arrays."""
    return jax.tree.map(lambda leaf: np.asarray(np.asarray(leaf.addressable_shards[0].data)[0]), tree)


class DistributedSetupError(ValueError):
    """The multi-process flags do not describe a run (an address without a process count, ...)."""


def initialize_distributed(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Joins a multi-process run with `jax.distributed.initialize` when an address is given.

    With `coordinator_address=None` this is a single-process run and nothing happens. The
    arguments are those of `jax.distributed.initialize`; on CPU, collectives across
    processes use gloo.
    """
    if not coordinator_address:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise DistributedSetupError("--num_processes/--process_id need --coordinator_address HOST:PORT")
        return
    if num_processes is None or process_id is None:
        raise DistributedSetupError("--coordinator_address needs --num_processes N and --process_id I as well")
    if not 0 <= process_id < num_processes:
        raise DistributedSetupError(f"--process_id={process_id} must lie in [0, {num_processes})")
    # Must run before any backend starts; it only affects CPU devices.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    log.info(
        "process %d of %d: %d local devices, %d global",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def shutdown_distributed() -> None:
    """Leaves JAX's multi-process runtime (a no-op in a single-process run). Every process of a
    run calls it at the same point, after its last collective."""
    if jax.distributed.is_initialized():
        jax.distributed.shutdown()


def is_primary_process() -> bool:
    """Only process 0 writes logs, plots and progress bars."""
    return jax.process_index() == 0
