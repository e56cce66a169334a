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
