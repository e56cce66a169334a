"""Item-item semantic links: a k-nearest-neighbour graph of items from their text features.

As LATTICE (Zhang et al., 2021) and FREEDOM (Zhou & Shen, 2023) do for multimodal
recommendation, every item keeps its `k` most similar items by cosine similarity of its text
feature (itself excluded, similarities <= 0 dropped); the directed lists are symmetrised (the
union of both directions: cosine is symmetric, so a pair found from both ends has one weight),
and the result is normalised once, `D^-1/2 S D^-1/2` over the kNN graph's own weighted
degrees, and scaled by a weight. `graph.build.build_interaction_graph(item_links=...)` stores
it as the `ITEM_EDGE` block, so propagation carries warm items' collaborative signal to the
cold items that read like them.

The top-k runs over row chunks of the `[n_items, n_items]` similarity, so memory stays one
chunk (about `chunk_elements` floats) whatever the catalogue's size. Host numpy; not jittable.
"""

from __future__ import annotations

import numpy as np

DEFAULT_CHUNK_ELEMENTS = 1 << 24  # similarities per chunk: 64 MiB of float32


def nearest_items(features: np.ndarray, k: int, *, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS):
    """Each item's `k` most cosine-similar other items.

    Args:
      features: `[n, h]` item features (any scale: rows are L2-normalised here; all-zero rows
        have no neighbours).
      k: neighbours per item (at most `n - 1` are found).
      chunk_elements: similarities computed at once (rows per chunk = this / n, at least 1).

    Returns:
      (neighbours `[n, k']` int64, similarities `[n, k']` float32), `k' = min(k, n - 1)`, each
      row by descending similarity (ties to the lower index); a slot whose similarity is not
      positive holds neighbour -1. Host numpy.
    """
    features = np.asarray(features, np.float32)
    num_items = features.shape[0]
    width = min(int(k), num_items - 1)
    neighbours = np.full((num_items, max(width, 0)), -1, np.int64)
    similarities = np.zeros((num_items, max(width, 0)), np.float32)
    if width <= 0:
        return neighbours, similarities
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = np.where(norms > 0, features / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
    rows_per_chunk = max(1, int(chunk_elements) // max(num_items, 1))
    for first in range(0, num_items, rows_per_chunk):
        last = min(first + rows_per_chunk, num_items)
        chunk = unit[first:last] @ unit.T  # [rows, n]
        chunk[np.arange(last - first), np.arange(first, last)] = -np.inf  # not its own neighbour
        top = np.argpartition(-chunk, width - 1, axis=1)[:, :width]
        values = np.take_along_axis(chunk, top, axis=1)
        order = np.lexsort((top, -values), axis=1)  # descending similarity, then lower index
        top, values = np.take_along_axis(top, order, axis=1), np.take_along_axis(values, order, axis=1)
        positive = values > 0
        neighbours[first:last] = np.where(positive, top, -1)
        similarities[first:last] = np.where(positive, values, 0.0)
    return neighbours, similarities


def semantic_item_links(
    features: np.ndarray, k: int, weight: float = 1.0, *, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The normalised, symmetric kNN graph of items, as `build_interaction_graph(item_links=...)`
    takes it.

    Args:
      features: `[n_items, h]` item text features (item indices are row indices).
      k: neighbours kept per item before symmetrising (a row may end with more than k).
      weight: the block's scale against the interactions'.
      chunk_elements: see `nearest_items`.

    Returns:
      (receivers `[l]` int64, senders `[l]` int64, weights `[l]` float64): both directions of
      every link, weight `weight * s_ij / sqrt(d_i d_j)` with `s_ij` the cosine similarity and
      `d_i = sum_j s_ij` over the symmetrised graph. Sorted by receiver, then sender. Host numpy.
    """
    num_items = np.asarray(features).shape[0]
    neighbours, similarities = nearest_items(features, k, chunk_elements=chunk_elements)
    rows = np.repeat(np.arange(num_items, dtype=np.int64), neighbours.shape[1])
    columns, values = neighbours.ravel(), similarities.ravel().astype(np.float64)
    found = columns >= 0
    rows, columns, values = rows[found], columns[found], values[found]
    # Union of both directions; a pair found from both ends has the same cosine, so keep one.
    receivers = np.concatenate([rows, columns])
    senders = np.concatenate([columns, rows])
    values = np.concatenate([values, values])
    keys, first = np.unique(receivers * num_items + senders, return_index=True)
    receivers, senders, values = keys // num_items, keys % num_items, values[first]
    degree = np.bincount(receivers, weights=values, minlength=num_items)
    weights = float(weight) * values / np.sqrt(degree[receivers] * degree[senders])
    return receivers, senders, weights
