"""Per-node text features for the text fusions: items from their text, users from theirs.

Item features are the text encoder's pooled output over the chosen fields, computed once in
a jitted batched pass and cached on disk (keyed by model, tokenizer, pooling, length and
text), then L2-normalised. A user's feature is their own text when the data has user text and
`user_fields` names fields; otherwise the mean of their training items' features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphrec_jax.data.types import Dataset, Interactions


def load_text_encoder(text_config, encoder: str | None = None):
    """The `TextEncoder` a `config.model.text` block describes (`encoder` overrides its path)."""
    from graphrec_jax.text.encoder import TextEncoder

    return TextEncoder.from_pretrained(
        encoder or text_config.encoder,
        max_length=text_config.max_length,
        dtype=text_config.dtype,
        batch_size=text_config.encode_batch_size,
        workers=text_config.encode_workers,
    )


def encode_records(
    records: Sequence[dict | None], fields: str, encoder, *, pooling: str, cache_dir: str | None = None
) -> np.ndarray:
    """Joins `fields` of each record and encodes them: `[len(records), hidden]` float32, unit norm.

    Records with no text at all get the encoding of the empty text. `cache_dir` None uses the
    default cache (`text.cache.default_cache_dir`).
    """
    from graphrec_jax.text.cache import encode_with_cache
    from graphrec_jax.text.item_text import join_text_fields, parse_fields

    texts = join_text_fields(list(records), parse_fields(fields))
    features = encode_with_cache(encoder, texts, pooling=pooling, cache_dir=cache_dir)
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


def node_text_features(
    dataset: Dataset,
    encoder,
    *,
    item_fields: str,
    user_fields: str = "",
    pooling: str = "mean",
    cache_dir: str | None = None,
) -> np.ndarray:
    """Text features of every graph node, users first: `[num_users + num_items, hidden]` float32.

    Items are encoded from `item_fields`; users from `user_fields` when given and the data has
    user text, else as the mean of their training items' features.
    """
    if dataset.item_text is None:
        raise ValueError(
            f"a text fusion needs item text, and the dataset {dataset.name!r} has none; use "
            "model.fusion='graph_only' or a dataset with item text (amazon, movielens, sociallgn, synthetic)"
        )
    items = encode_records(dataset.item_text, item_fields, encoder, pooling=pooling, cache_dir=cache_dir)
    if user_fields and dataset.user_text is not None:
        users = encode_records(dataset.user_text, user_fields, encoder, pooling=pooling, cache_dir=cache_dir)
    else:
        users = user_profiles(items, dataset.train, dataset.num_users)
    return np.concatenate([users, items]).astype(np.float32)
