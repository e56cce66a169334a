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
        text.encoder, max_length=text.max_length, dtype=text.dtype, batch_size=text.encode_batch_size
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
