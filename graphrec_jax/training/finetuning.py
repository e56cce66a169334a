"""Fine-tuning the text tower during training: the glue between the tower and the loop.

`TextFinetuning` holds the tower (`text.finetune.TextTower`) and the frozen prefix states of
every item, adds to each batch the items whose text the step re-encodes, and recomputes every
node's text features with the tower as trained so far (once per epoch, and before evaluation
and saving).
"""

from __future__ import annotations

import numpy as np

from graphrec_jax.data.types import Dataset
from graphrec_jax.graph.build import ITEM_NODE
from graphrec_jax.text.features import encode_records, user_profiles
from graphrec_jax.text.finetune import TEXT_PARAMS, TextTower, choose_text_items, compute_prefix_states, embed_all
from graphrec_jax.text.item_text import join_text_fields, parse_fields

__all__ = ["TEXT_PARAMS", "TextFinetuning"]


class TextFinetuning:
    """What fine-tuning the text tower during training needs besides the step itself.

    Args:
      dataset: the dataset whose items (and users) are encoded.
      encoder: the pretrained `TextEncoder` the tower starts from.
      freeze_layers, pooling, dtype: the tower (`model.text.*`).
      items_per_step: items re-encoded per step and device (`model.text.finetune_items_per_step`).
      item_fields, user_fields: the text fields (`data.text.*`); users without `user_fields`
        get the mean of their items' features.
      seed: seeds the choice of items per step (with the epoch and batch).
      cache_dir: the embedding cache for users' own text (None: the default).
    """

    def __init__(
        self,
        dataset: Dataset,
        encoder,
        *,
        freeze_layers: int,
        pooling: str,
        dtype: str,
        items_per_step: int,
        item_fields: str,
        user_fields: str = "",
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        self.tower = TextTower(encoder.config, freeze_layers, pooling, dtype)
        self.base_params = encoder.params
        self.items_per_step = items_per_step
        self.seed = seed
        self.num_users = dataset.num_users
        self.train = dataset.train
        self.user_features = None
        if user_fields and dataset.user_text is not None:
            self.user_features = encode_records(
                dataset.user_text, user_fields, encoder, pooling=pooling, cache_dir=cache_dir
            )
        tokens = encoder.tokenize(join_text_fields(dataset.item_text, parse_fields(item_fields)))
        self.mask = tokens["attention_mask"]
        self.prefix = compute_prefix_states(self.tower, self.base_params, tokens, batch_size=encoder.batch_size)

    def initial_params(self) -> dict:
        """The tower's trainable parameters at the start: the pretrained ones."""
        return self.tower.trainable_params(self.base_params)

    def constants(self) -> dict:
        """Per-run `Batch` fields: `text_prefix [n_items, t, hidden]`, `text_mask [n_items, t]`."""
        return {"text_prefix": self.prefix, "text_mask": self.mask}

    def node_features(self, trainable: dict) -> np.ndarray:
        """Every node's text features with the tower's current parameters, `[n_node, hidden]`."""
        items = embed_all(self.tower, trainable, self.prefix, self.mask)
        users = self.user_features
        if users is None:
            users = user_profiles(items, self.train, self.num_users)
        return np.concatenate([users, items]).astype(np.float32)

    def full_params(self, trainable: dict) -> dict:
        """A full BERT parameter tree with the trained layers in place (for serving new items)."""
        return self.tower.merge_params(self.base_params, trainable)

    def wrap(self, source):
        """A batch source whose batches also carry `text_items` (see `Batch`)."""
        return _FinetuneBatches(source, self)


class _FinetuneBatches:
    """Adds to each device's batch the items whose text is re-encoded in that step."""

    def __init__(self, source, finetuning: TextFinetuning):
        self.source = source
        self.finetuning = finetuning
        self.batches_per_epoch = source.batches_per_epoch

    def constants(self, graph, text_features=None) -> dict:
        return {**self.source.constants(graph, text_features), **self.finetuning.constants()}

    def epoch(self, epoch: int, start_batch: int = 0):
        for index, batch in enumerate(self.source.epoch(epoch, start_batch), start=start_batch):
            # Seeded by (seed, epoch, batch): a resumed run re-encodes the same items.
            rng = np.random.default_rng([self.finetuning.seed, epoch, index])
            if batch.graph is not None:
                per_device = self._subgraph_items(batch.graph)
                capacity = self.finetuning.items_per_step
            else:
                per_device = np.concatenate(
                    [
                        batch.positives.reshape(len(batch.positives), -1),
                        batch.negatives.reshape(len(batch.negatives), -1),
                    ],
                    axis=1,
                )
                capacity = min(self.finetuning.items_per_step, per_device.shape[1])
            yield batch.replace(text_items=np.stack([choose_text_items(rows, capacity, rng) for rows in per_device]))

    def _subgraph_items(self, graph) -> list[np.ndarray]:
        """Per device, the full-graph item indices of a sampled subgraph's item nodes (padding
        nodes are users of kind 0, so they never appear): the tower encodes only these."""
        kinds, global_ids = graph.nodes["kind"], graph.nodes["global_id"]
        return [ids[kind == ITEM_NODE] - self.finetuning.num_users for kind, ids in zip(kinds, global_ids, strict=True)]
