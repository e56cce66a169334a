"""Per-node text features for the text fusions: items from their text, users from theirs.

Item features are the text encoder's pooled output over the configured fields, computed
once in a jitted batched pass and cached on disk (keyed by model, pooling, length and text),
then L2-normalised. A user's feature is their own text when the data has user text and
`data.text.user_fields` names fields; otherwise the mean of their training items' features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphrec_jax.data.types import Dataset, Interactions


def load_text_encoder(config):
    """The `TextEncoder` that `config.model.text` names."""
    from graphrec_jax.text.encoder import TextEncoder

    text = config.model.text
    return TextEncoder.from_pretrained(
        text.encoder,
        max_length=text.max_length,
        dtype=text.dtype,
        batch_size=text.encode_batch_size,
        workers=text.encode_workers,
    )


def encode_records(config, records: Sequence[dict | None], fields: str, encoder=None) -> np.ndarray:
    """Joins `fields` of each record and encodes them: `[len(records), hidden]` float32, unit norm.

    Records with no text at all get the encoding of the empty text.
    """
    from graphrec_jax.text.cache import encode_with_cache
    from graphrec_jax.text.item_text import join_text_fields, parse_fields

    encoder = encoder or load_text_encoder(config)
    texts = join_text_fields(list(records), parse_fields(fields))
    features = encode_with_cache(
        encoder, texts, pooling=config.model.text.pooling, cache_dir=config.model.text.cache_dir or None
    )
    return normalize_rows(np.asarray(features, np.float32))


def normalize_rows(features: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 norm (all-zero rows stay zero): `[n, h] -> [n, h]`."""
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return np.where(norms > 0, features / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def user_profiles(item_features: np.ndarray, train: Interactions, num_users: int) -> np.ndarray:
    """Mean of each user's training items' features, `[num_users, h]` (zeros without items)."""
    sums = np.zeros((num_users, item_features.shape[1]), np.float64)
    np.add.at(sums, train.users, item_features[train.items])
    counts = np.bincount(train.users, minlength=num_users)[:, None]
    return (sums / np.maximum(counts, 1)).astype(np.float32)


def node_text_features(config, dataset: Dataset, encoder=None) -> np.ndarray:
    """Text features of every graph node, users first: `[num_users + num_items, hidden]` float32."""
    if dataset.item_text is None:
        raise ValueError(
            f"model.fusion={config.model.fusion!r} needs item text, and data.format="
            f"{config.data.format!r} at {config.data.path!r} has none; use model.fusion='graph_only' "
            "or a dataset with item text (amazon, movielens, synthetic)"
        )
    encoder = encoder or load_text_encoder(config)
    items = encode_records(config, dataset.item_text, config.data.text.item_fields, encoder)
    if config.data.text.user_fields and dataset.user_text is not None:
        users = encode_records(config, dataset.user_text, config.data.text.user_fields, encoder)
    else:
        users = user_profiles(items, dataset.train, dataset.num_users)
    return np.concatenate([users, items]).astype(np.float32)


class TextFinetuning:
    """What fine-tuning the text tower during training needs besides the step itself.

    It holds the tower (`text.finetune.TextTower`), the frozen prefix states of every item,
    and it adds to each batch the items whose text the step re-encodes; `node_features`
    recomputes every node's text features with the current tower (once per epoch, and
    before evaluation and saving).

    Args:
      config: the run config (`model.text.*`, `data.text.*`).
      dataset: the dataset whose items (and users) are encoded.
      encoder: the pretrained `TextEncoder` the tower starts from.
    """

    def __init__(self, config, dataset: Dataset, encoder):
        from graphrec_jax.text.finetune import TextTower, compute_prefix_states
        from graphrec_jax.text.item_text import join_text_fields, parse_fields

        text = config.model.text
        self.tower = TextTower(encoder.config, text.freeze_layers, text.pooling, text.dtype)
        self.base_params = encoder.params
        self.items_per_step = text.finetune_items_per_step
        self.seed = config.seed
        self.num_users = dataset.num_users
        self.train = dataset.train
        self.user_features = None
        if config.data.text.user_fields and dataset.user_text is not None:
            self.user_features = encode_records(config, dataset.user_text, config.data.text.user_fields, encoder)
        texts = join_text_fields(dataset.item_text, parse_fields(config.data.text.item_fields))
        tokens = encoder.tokenize(texts)
        self.mask = tokens["attention_mask"]
        self.prefix = compute_prefix_states(self.tower, self.base_params, tokens, batch_size=text.encode_batch_size)

    def initial_params(self) -> dict:
        """The tower's trainable parameters at the start: the pretrained ones."""
        return self.tower.trainable_params(self.base_params)

    def constants(self) -> dict:
        """Per-run arrays the step reads: `text_prefix [n_items, t, hidden]`, `text_mask [n_items, t]`."""
        return {"text_prefix": self.prefix, "text_mask": self.mask}

    def node_features(self, trainable: dict) -> np.ndarray:
        """Every node's text features with the tower's current parameters, `[n_node, hidden]`."""
        from graphrec_jax.text.finetune import embed_all

        items = embed_all(self.tower, trainable, self.prefix, self.mask)
        users = self.user_features
        if users is None:
            users = user_profiles(items, self.train, self.num_users)
        return np.concatenate([users, items]).astype(np.float32)

    def full_params(self, trainable: dict) -> dict:
        """A full BERT parameter tree with the trained layers in place (for serving new items)."""
        return self.tower.merge_params(self.base_params, trainable)

    def wrap(self, source):
        """A batch source whose batches also carry `text_items` (see `steps`)."""
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
        from graphrec_jax.text.finetune import choose_text_items

        for index, batch in enumerate(self.source.epoch(epoch, start_batch), start=start_batch):
            # Seeded by (seed, epoch, batch): a resumed run re-encodes the same items.
            rng = np.random.default_rng([self.finetuning.seed, epoch, index])
            if "graph" in batch:
                per_device = self._subgraph_items(batch["graph"])
                capacity = self.finetuning.items_per_step
            else:
                per_device = np.concatenate(
                    [
                        batch["positives"].reshape(len(batch["positives"]), -1),
                        batch["negatives"].reshape(len(batch["negatives"]), -1),
                    ],
                    axis=1,
                )
                capacity = min(self.finetuning.items_per_step, per_device.shape[1])
            batch["text_items"] = np.stack([choose_text_items(rows, capacity, rng) for rows in per_device])
            yield batch

    def _subgraph_items(self, graph) -> list[np.ndarray]:
        """Per device, the full-graph item indices of a sampled subgraph's item nodes (padding
        nodes are users of kind 0, so they never appear): the tower encodes only these."""
        from graphrec_jax.graph import ITEM_NODE

        kinds, global_ids = graph.nodes["kind"], graph.nodes["global_id"]
        return [ids[kind == ITEM_NODE] - self.finetuning.num_users for kind, ids in zip(kinds, global_ids, strict=True)]
