"""Training batches: the `Batch` contract, LightGCN's triple sampler, and the full-graph source.

`Batch` is what the compiled step reads. `TripleSampler` follows LightGCN's protocol: each
epoch draws as many (user, positive, negative) triples as there are training interactions;
the user is uniform over users with at least one training item, the positive uniform over
that user's items, the negative uniform over items the user has not interacted with
(rejection sampling, vectorised).
Each epoch's triples depend only on (seed, epoch), so a resumed run draws the same ones.
A batch source (`FullGraphBatches` here, `sampled.SampledSubgraphBatches`) turns them into
fixed-shape batches, host numpy, vectorised.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import flax
import numpy as np

from graphrec_jax.graph.sparse import pairs_by_row


@flax.struct.dataclass
class Batch:
    """One step's input, per device. A source yields it with a leading device axis
    (`[num_local_devices, ...]` on every array) for `jax.pmap`; the step sees one device's share.

    Attributes:
      users: `[b]` int32 user rows: node indices of the full graph, or positions in `graph` when
        it is a sampled subgraph.
      positives: `[b]` int32 positive items: item indices, or subgraph positions minus
        `num_users`, so that `num_users + positives` are node rows in either case.
      negatives: `[b, n_neg]` int32 negative items, like `positives`.
      mask: `[b]` bool, False on padding rows.
      graph: the `jraph.GraphsTuple` the step propagates over: the whole training graph (a
        constant placed once per run) or this batch's padded subgraph.
      text_features: `[n_node, text_dim]` float32 per-node text features (text fusions; a constant).
      positive_items: `[b]` int32 full-graph item index of each positive (sampled batches).
      text_items: `[t]` int32 items whose text the fine-tuned tower re-encodes this step.
      text_prefix: `[n_items, length, hidden]` frozen prefix states (or `[n_items, length]` int32
        token ids) of every item's text (fine-tuning; a constant).
      text_mask: `[n_items, length]` int32 attention mask of `text_prefix` (fine-tuning; a constant).
    """

    users: Any
    positives: Any
    negatives: Any
    mask: Any
    graph: Any = None
    text_features: Any = None
    positive_items: Any = None
    text_items: Any = None
    text_prefix: Any = None
    text_mask: Any = None


class TripleSampler:
    """Draws (user, positive, negatives) index triples.

    Args:
      num_users, num_items: index ranges.
      users, items: `[n]` training interactions (deduplicated).
      seed: base seed; epoch `e` uses the generator seeded with `(seed, e)`.
      negative_items: `[m]` item indices negatives are drawn from; None for every item
        (LightGCN's protocol). Training with items nobody has interacted with (cold items)
        passes the trained items here: a cold item drawn only ever as a negative would teach
        the model to bury every new item.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        users: np.ndarray,
        items: np.ndarray,
        seed: int,
        negative_items: np.ndarray | None = None,
    ):
        if len(users) == 0:
            raise ValueError("no training interactions to sample from")
        self.num_users = num_users
        self.num_items = num_items
        self.seed = seed
        self.offsets, items_by_user = pairs_by_row(users, items, num_users)
        self.items = items_by_user.astype(np.int64)
        self.degree = np.diff(self.offsets)
        sorted_users = np.repeat(np.arange(num_users, dtype=np.int64), self.degree)
        self.active_users = np.flatnonzero(self.degree > 0)
        # (user, item) pairs as sorted int64 keys: a membership test is one searchsorted.
        self.keys = sorted_users * num_items + self.items
        self.num_interactions = len(self.items)
        self.negative_items = None if negative_items is None else np.unique(np.asarray(negative_items, np.int64))
        pool = num_items if self.negative_items is None else len(self.negative_items)
        if np.any(self.degree >= pool):
            crowded = int(np.flatnonzero(self.degree >= pool)[0])
            raise ValueError(f"user index {crowded} interacted with every item: no negative can be drawn")

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (user, item) pair is a training interaction: `[n]` bool."""
        keys = users * self.num_items + items
        position = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[position] == keys

    def _draw_items(self, rng: np.random.Generator, count: int) -> np.ndarray:
        if self.negative_items is None:
            return rng.integers(0, self.num_items, count)
        return self.negative_items[rng.integers(0, len(self.negative_items), count)]

    def sample_epoch(self, epoch: int, num_negatives: int = 1) -> dict[str, np.ndarray]:
        """One epoch of triples: users `[n]`, positives `[n]`, negatives `[n, num_negatives]` (int32)."""
        rng = np.random.default_rng([self.seed, epoch])
        count = self.num_interactions
        users = self.active_users[rng.integers(0, len(self.active_users), count)]
        positives = self.items[self.offsets[users] + rng.integers(0, self.degree[users])]
        flat_users = np.repeat(users, num_negatives)
        flat_negatives = self._draw_items(rng, count * num_negatives)
        redraw = np.flatnonzero(self.is_positive(flat_users, flat_negatives))
        while len(redraw):
            flat_negatives[redraw] = self._draw_items(rng, len(redraw))
            redraw = redraw[self.is_positive(flat_users[redraw], flat_negatives[redraw])]
        return {
            "users": users.astype(np.int32),
            "positives": positives.astype(np.int32),
            "negatives": flat_negatives.reshape(count, num_negatives).astype(np.int32),
        }


def num_batches(num_examples: int, batch_size: int) -> int:
    return -(-num_examples // batch_size)


def iterate_batches(
    triples: dict[str, np.ndarray],
    batch_size: int,
    num_devices: int,
    start_batch: int = 0,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[Batch]:
    """Yields this process's share of fixed-shape global `Batch`es, from batch `start_batch` on.

    A global batch of `batch_size` rows is split evenly over `process_count` processes and
    then over this process's `num_devices` devices: every array gets shape
    `[num_devices, batch_size // (process_count * num_devices), ...]`. The last partial batch
    is padded with index 0 and `mask` False, so one compiled step serves every batch.
    """
    shards = num_devices * process_count
    if batch_size % shards:
        raise ValueError(
            f"train.batch_size={batch_size} must be divisible by the {shards} devices "
            f"({process_count} processes x {num_devices} local devices); use a multiple of {shards}"
        )
    count = len(triples["users"])
    per_process = batch_size // process_count
    per_device = per_process // num_devices
    for batch_index in range(start_batch, num_batches(count, batch_size)):
        start = batch_index * batch_size + process_index * per_process
        stop = min(start + per_process, count)
        real = max(stop - start, 0)
        fields = {}
        for key in ("users", "positives", "negatives"):
            chunk = triples[key][start : start + real]
            if real < per_process:
                padding = np.zeros((per_process - real,) + chunk.shape[1:], chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            fields[key] = chunk.reshape((num_devices, per_device) + chunk.shape[1:])
        mask = (np.arange(per_process) < real).reshape(num_devices, per_device)
        yield Batch(mask=mask, **fields)


class FullGraphBatches:
    """Batches for full-graph training: each step propagates over the whole training graph.

    The graph (and text features) are per-run constants placed on the devices once
    (`constants`); each batch carries only its triples.

    Args:
      sampler: draws each epoch's triples.
      batch_size: global batch size (all processes and devices together).
      num_negatives: negatives per triple.
      num_devices: this process's local device count.
      process_index, process_count: this process's place in a multi-process run.
    """

    def __init__(
        self,
        sampler: TripleSampler,
        batch_size: int,
        num_negatives: int,
        num_devices: int,
        *,
        process_index: int = 0,
        process_count: int = 1,
    ):
        self.sampler = sampler
        self.batch_size = batch_size
        self.num_negatives = num_negatives
        self.num_devices = num_devices
        self.process_index = process_index
        self.process_count = process_count
        self.batches_per_epoch = num_batches(sampler.num_interactions, batch_size)

    def constants(self, graph, text_features=None) -> dict:
        """`Batch` fields every step reads, placed once: the full graph and the text features."""
        constants = {"graph": graph}
        if text_features is not None:
            constants["text_features"] = text_features
        return constants

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """This process's batches of `epoch`, from `start_batch` on (host numpy)."""
        triples = self.sampler.sample_epoch(epoch, self.num_negatives)
        return iterate_batches(
            triples,
            self.batch_size,
            self.num_devices,
            start_batch,
            process_index=self.process_index,
            process_count=self.process_count,
        )
