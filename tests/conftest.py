"""Shared fixtures."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def tiny_interactions():
    """12 users x 9 items, every user with 2-5 distinct items: (num_users, num_items, users, items)."""
    rng = np.random.default_rng(7)
    users, items = [], []
    for user in range(12):
        chosen = rng.choice(9, size=rng.integers(2, 6), replace=False)
        users += [user] * len(chosen)
        items += chosen.tolist()
    return 12, 9, np.array(users, np.int32), np.array(items, np.int32)


@pytest.fixture(scope="module")
def power_law_graph():
    """40 users x 25 items with power-law-ish item popularity (blocks of hub rows get cut by an
    edge budget); the last 2 users are isolated."""
    from graphrec_jax.graph.build import build_interaction_graph

    rng = np.random.default_rng(0)
    items = np.minimum((rng.pareto(1.2, 400) * 3).astype(int), 24)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, 38, 400), items, strict=True)}
    users, items = (np.array(column, np.int32) for column in zip(*sorted(pairs), strict=True))
    return build_interaction_graph(40, 25, users, items)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A small random BERT checkpoint directory whose vocabulary covers the synthetic catalogue."""
    from graphrec_jax.data.synthetic import generate_catalogue
    from graphrec_jax.text.pretrained import create_random_checkpoint

    _, texts = generate_catalogue(60, 40, 4, 8, seed=0)
    words = sorted({word.strip(",.").lower() for text in texts for value in text.values() for word in value.split()})
    return str(create_random_checkpoint(tmp_path_factory.mktemp("bert"), words))
