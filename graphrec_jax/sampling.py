"""Training triples and fixed-shape batches, vectorised in numpy on the host.

`TripleSampler` follows LightGCN's protocol: each epoch draws as many (user, positive,
negative) triples as there are training interactions; the user is uniform over users with
at least one training item, the positive uniform over that user's items, the negative
uniform over items the user has not interacted with (rejection sampling, vectorised).
Each epoch's triples depend only on (seed, epoch), so a resumed run draws the same ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class TripleSampler:
    """Draws (user, positive, negatives) index triples.

    Args:
      num_users, num_items: index ranges.
      users, items: `[n]` training interactions (deduplicated).
      seed: base seed; epoch `e` uses the generator seeded with `(seed, e)`.
    """

    def __init__(self, num_users: int, num_items: int, users: np.ndarray, items: np.ndarray, seed: int):
        if len(users) == 0:
            raise ValueError("no training interactions to sample from")
        self.num_users = num_users
        self.num_items = num_items
        self.seed = seed
        order = np.lexsort((items, users))
        self.items = np.asarray(items, np.int64)[order]
        sorted_users = np.asarray(users, np.int64)[order]
        self.offsets = np.searchsorted(sorted_users, np.arange(num_users + 1)).astype(np.int64)
        self.degree = np.diff(self.offsets)
        self.active_users = np.flatnonzero(self.degree > 0)
        # (user, item) pairs as sorted int64 keys: a membership test is one searchsorted.
        self.keys = sorted_users * num_items + self.items
        self.num_interactions = len(self.items)
        if np.any(self.degree >= num_items):
            crowded = int(np.flatnonzero(self.degree >= num_items)[0])
            raise ValueError(f"user index {crowded} interacted with every item: no negative can be drawn")

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (user, item) pair is a training interaction: `[n]` bool."""
        keys = users * self.num_items + items
        position = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[position] == keys

    def sample_epoch(self, epoch: int, num_negatives: int = 1) -> dict[str, np.ndarray]:
        """One epoch of triples: users `[n]`, positives `[n]`, negatives `[n, num_negatives]` (int32)."""
        rng = np.random.default_rng([self.seed, epoch])
        count = self.num_interactions
        users = self.active_users[rng.integers(0, len(self.active_users), count)]
        positives = self.items[self.offsets[users] + rng.integers(0, self.degree[users])]
        negatives = rng.integers(0, self.num_items, (count, num_negatives))
        flat_users = np.repeat(users, num_negatives)
        flat_negatives = negatives.reshape(-1)
        redraw = np.flatnonzero(self.is_positive(flat_users, flat_negatives))
        while len(redraw):
            flat_negatives[redraw] = rng.integers(0, self.num_items, len(redraw))
            redraw = redraw[self.is_positive(flat_users[redraw], flat_negatives[redraw])]
        return {
            "users": users.astype(np.int32),
            "positives": positives.astype(np.int32),
            "negatives": flat_negatives.reshape(count, num_negatives).astype(np.int32),
        }


def num_batches(num_examples: int, batch_size: int) -> int:
    return -(-num_examples // batch_size)


def iterate_batches(
    triples: dict[str, np.ndarray], batch_size: int, num_devices: int, start_batch: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Yields fixed-shape batches split over devices, from batch `start_batch` on.

    Every array gets shape `[num_devices, batch_size // num_devices, ...]`; the last partial
    batch is padded with index 0 and `mask` False, so one compiled step serves every batch.
    """
    if batch_size % num_devices:
        raise ValueError(
            f"train.batch_size={batch_size} must be divisible by the {num_devices} devices; "
            f"use a multiple of {num_devices}"
        )
    count = len(triples["users"])
    per_device = batch_size // num_devices
    for batch_index in range(start_batch, num_batches(count, batch_size)):
        start = batch_index * batch_size
        stop = min(start + batch_size, count)
        batch = {}
        for key, values in triples.items():
            chunk = values[start:stop]
            if stop - start < batch_size:
                padding = np.zeros((batch_size - (stop - start),) + chunk.shape[1:], chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            batch[key] = chunk.reshape((num_devices, per_device) + chunk.shape[1:])
        mask = np.arange(start, start + batch_size) < stop
        batch["mask"] = mask.reshape(num_devices, per_device)
        yield batch
