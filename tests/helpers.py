"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def datasets_root() -> Path:
    return Path(os.environ.get("GRAPHREC_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


def require_dataset(relative: str) -> Path:
    """The path of a shared dataset, or a skip naming what is missing."""
    path = datasets_root() / relative
    if not path.exists():
        pytest.skip(f"dataset {path} is absent (set GRAPHREC_DATASETS to the datasets folder)")
    return path


def config_has_key(config, key: str) -> bool:
    """Whether the dotted `key` ("train.learning_rate") names a key of the ConfigDict `config`."""
    node = config
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def dense_adjacency(graph) -> np.ndarray:
    """What one propagation step multiplies by, as a dense `[n, n]` matrix, rows = receivers
    (every block but the transpose of directed social links, which only carries gradients)."""
    from graphrec_jax.graph.build import SOCIAL_REVERSE_EDGE

    n = int(np.sum(graph.n_node))
    forward = np.asarray(graph.edges["kind"]) != SOCIAL_REVERSE_EDGE
    matrix = np.zeros((n, n), np.float64)
    receivers, senders = np.asarray(graph.receivers)[forward], np.asarray(graph.senders)[forward]
    np.add.at(matrix, (receivers, senders), np.asarray(graph.edges["weight"])[forward])
    return matrix


def override(config, **values):
    """Sets dotted keys (`override(config, **{"model.name": "gcn"})`) and returns the config;
    a value of another type than the default's is allowed (the bad-input tests need that)."""
    for key, value in values.items():
        section = config
        *parents, leaf = key.split(".")
        for parent in parents:
            section = section[parent]
        with section.ignore_type():
            section[leaf] = value
    return config


def free_port() -> int:
    """A TCP port on localhost nobody listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def subprocess_environment(num_devices: int = 1) -> dict:
    """The environment of a test's child process: this checkout on the path, CPU only, with
    `num_devices` CPU devices and no huge-page re-execution."""
    return dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
        GRAPHREC_HUGEPAGES="0",
    )
