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
