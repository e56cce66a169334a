"""Sampled training's batch source: each device's rows come with their padded neighbourhood subgraph.

The triples and their per-process split are `batches.FullGraphBatches`'; each device's share of
a batch seeds a subgraph (`graph.subgraphs.NeighborSampler`), drawn from the generator seeded
with `(seed, epoch, batch, global device)`, so a resumed run replays its subgraphs, and padded
to one budget computed once from the batch size, the fanouts and the degrees, so one compiled
step serves every batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import jax
import numpy as np

from graphrec_jax.graph.subgraphs import NeighborSampler, pad_subgraph
from graphrec_jax.training.batches import Batch, FullGraphBatches, TripleSampler


class SubgraphBudgetWarning(UserWarning):
    """A sampled subgraph exceeded its budget and some of its rows were dropped."""


class SampledSubgraphBatches(FullGraphBatches):
    """Batches for sampled training: each device's rows come with their padded subgraph.

    Same triples and per-process split as `FullGraphBatches`; each `Batch` holds, per local
    device (leading axis): `graph` (padded to one budget), `users` (subgraph positions),
    `positives` and `negatives` (subgraph positions minus `num_users`, so the step's
    `num_users + index` rows land on them), `positive_items` (full-graph item index of each
    positive) and `mask`.

    Args:
      sampler: the triple sampler.
      neighbors: the neighbourhood sampler.
      batch_size: global batch size; num_negatives: per triple; num_devices: local devices.
      process_index, process_count: this process's place in a multi-process run.
      seed: the subgraphs' base seed (`sampling.seed`).
      node_budget, edge_budget: overrides of the computed budget (0 keeps it). A subgraph over
        budget trains on its first rows only; the rest are dropped with a `SubgraphBudgetWarning`.
    """

    def __init__(
        self,
        sampler: TripleSampler,
        neighbors: NeighborSampler,
        batch_size: int,
        num_negatives: int,
        num_devices: int,
        *,
        process_index: int = 0,
        process_count: int = 1,
        seed: int = 0,
        node_budget: int = 0,
        edge_budget: int = 0,
    ):
        super().__init__(
            sampler, batch_size, num_negatives, num_devices, process_index=process_index, process_count=process_count
        )
        self.neighbors = neighbors
        self.seed = seed
        rows = max(batch_size // (num_devices * process_count), 1)
        computed = neighbors.budget(rows, num_negatives)
        self.node_budget = node_budget or computed[0]
        self.edge_budget = edge_budget or computed[1]
        self.dropped_rows = 0

    def constants(self, graph=None, text_features=None) -> dict:
        """Per-run `Batch` fields: the text features (the model gathers them by `global_id`);
        the graph travels with each batch."""
        return {} if text_features is None else {"text_features": text_features}

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """This process's batches of `epoch` from `start_batch` on (host numpy, not jittable)."""
        for offset, batch in enumerate(super().epoch(epoch, start_batch)):
            yield self.subgraph_batch(batch, epoch, start_batch + offset)

    def subgraph_batch(self, batch: Batch, epoch: int, batch_index: int) -> Batch:
        """Adds each device's padded subgraph to a `[num_devices, b, ...]` triple batch."""
        per_device = []
        for device in range(self.num_devices):
            shard = self.process_index * self.num_devices + device
            rows = jax.tree.map(lambda values, device=device: values[device], batch)
            per_device.append(self._device_batch(rows, (self.seed, epoch, batch_index, shard), epoch, batch_index))
        return jax.tree.map(lambda *leaves: leaves[0][None] if len(leaves) == 1 else np.stack(leaves), *per_device)

    def _device_batch(self, rows: Batch, key: tuple, epoch: int, batch_index: int) -> Batch:
        num_users = self.sampler.num_users
        real = int(rows.mask.sum())  # iterate_batches puts the real rows first
        kept = real
        while True:
            users = rows.users[:kept].astype(np.int64)
            positives = num_users + rows.positives[:kept].astype(np.int64)
            negatives = num_users + rows.negatives[:kept].astype(np.int64)
            seeds = np.concatenate([users, positives, negatives.ravel()])
            graph, positions = self.neighbors.sample(seeds, np.random.default_rng(list(key)))
            nodes, edges = int(graph.n_node[0]), int(graph.n_edge[0])
            if nodes < self.node_budget and edges <= self.edge_budget:
                break
            if kept <= 1:
                raise ValueError(
                    f"sampling.node_budget={self.node_budget} / edge_budget={self.edge_budget} cannot hold the "
                    "subgraph of a single row; raise them, or set both to 0 to use the computed budget"
                )
            share = min((self.node_budget - 1) / nodes, self.edge_budget / max(edges, 1))
            kept = max(1, min(kept - 1, int(kept * share * 0.95)))
        if kept < real:
            self.dropped_rows += real - kept
            warnings.warn(
                f"batch {batch_index} of epoch {epoch}: a sampled subgraph of {real} rows exceeds "
                f"sampling.node_budget={self.node_budget} / edge_budget={self.edge_budget}; trained on {kept} rows, "
                f"dropped {real - kept} ({self.dropped_rows} dropped so far). Raise the budgets or set them to 0",
                SubgraphBudgetWarning,
                stacklevel=2,
            )
        b, negatives_per_row = rows.negatives.shape
        user_position = np.zeros(b, np.int32)
        item_position = np.zeros((b, 1 + negatives_per_row), np.int32)
        user_position[:kept] = positions[:kept]
        item_position[:kept, 0] = positions[kept : 2 * kept]
        item_position[:kept, 1:] = positions[2 * kept :].reshape(kept, negatives_per_row)
        mask = np.arange(b) < kept
        return Batch(
            graph=pad_subgraph(graph, self.node_budget, self.edge_budget),
            users=user_position,
            positives=item_position[:, 0] - num_users,
            negatives=item_position[:, 1:] - num_users,
            positive_items=np.where(mask, rows.positives, 0).astype(np.int32),
            mask=mask,
        )
