"""Beyond-accuracy metrics of top-K lists: diversity, coverage, novelty and exposure inequality.

Host NumPy, vectorised over users (no Python loop over users or items); not jittable, as the category
metrics build index arrays whose length depends on the data. Every function takes `top_items [u, K]` int
item ids, one row per evaluated user, -1 for an empty slot. Definitions (a "list" is a row's valid slots):

* ild: intra-list diversity in representation space, the mean over users of the mean pairwise cosine
  distance 1 - cos(v_i, v_j) between the list's items. Lists with fewer than 2 items are skipped; a zero
  vector has cosine 0 with everything.
* ild_category: the mean over users of the mean pairwise Jaccard distance 1 - |A & B| / |A | B| between the
  category sets of the list's items. Only items with at least one category count ("only tagged artists in
  the list count", as in the LastFM SOURCE.md), and lists with fewer than 2 such items are skipped.
* category_coverage: the mean over all users of |union of the list's categories| / the number of distinct
  categories in the catalogue (an empty list covers nothing).
* coverage: distinct candidate items recommended to anyone / the number of candidate items.
* novelty: the mean over all recommended slots of -log2(p_i), p_i = (training users who interacted with
  item i) / num_users; an item without training interactions counts as 1 user, so its novelty is finite.
* gini: Gini index of exposure (the number of lists holding the item) over the candidate items, never
  recommended ones included with exposure 0: G = sum_i (2i - n - 1) x_(i) / (n sum_i x_i), x ascending,
  i = 1..n (RecBole's GiniIndex). 0 is equal exposure; 1 - 1/n is everything on one item.

Items recommended outside the candidate set count for ild, category metrics and novelty but not for
coverage or gini. A metric with nothing to average over (no list with 2 items, no slot) is NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# Users per chunk for the [chunk, K, K] and [chunk, K, d] intermediates.
USER_CHUNK = 4096

CategoryCsr = tuple[np.ndarray, np.ndarray]


def categories_to_csr(item_categories, num_items: int | None = None) -> CategoryCsr:
    """Item categories as a CSR pair, each item's categories sorted and deduplicated.

    Args:
      item_categories: a CSR pair `(offsets [n_items + 1], category_ids [nnz])` given as a tuple of two NumPy
        arrays (item i owns `category_ids[offsets[i]:offsets[i + 1]]`), or a Python list with one sequence of
        category ids per item (an empty one for an item without categories).
      num_items: if given, the number of items the categories must cover.

    Returns:
      `(offsets [n_items + 1] int64, category_ids [nnz] int64)`.
    """
    if (
        isinstance(item_categories, tuple)
        and len(item_categories) == 2
        and all(isinstance(part, np.ndarray) for part in item_categories)
    ):
        offsets = np.asarray(item_categories[0], np.int64)
        categories = np.asarray(item_categories[1], np.int64)
        if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != categories.size:
            raise ValueError(
                "item_categories: CSR offsets must be 1-D, start at 0 and end at len(category_ids) "
                f"({categories.size}), got {offsets.size} offsets from {offsets[:1]} to {offsets[-1:]}"
            )
        if (np.diff(offsets) < 0).any():
            raise ValueError(f"item_categories: CSR offsets decrease at item {int(np.argmax(np.diff(offsets) < 0))}")
    elif isinstance(item_categories, list):
        lengths = np.array([len(entry) for entry in item_categories], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        categories = np.fromiter((c for entry in item_categories for c in entry), np.int64, int(offsets[-1]))
    else:
        raise TypeError(
            "item_categories must be a tuple (offsets, category_ids) of NumPy arrays or a list of per-item "
            f"category sequences, got {type(item_categories).__name__}"
        )
    if categories.size and categories.min() < 0:
        raise ValueError(f"item_categories: category ids must be >= 0, got {int(categories.min())}")
    items = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    order = np.lexsort((categories, items))
    items, categories = items[order], categories[order]
    keep = np.ones(items.size, bool)
    keep[1:] = (items[1:] != items[:-1]) | (categories[1:] != categories[:-1])
    items, categories = items[keep], categories[keep]
    offsets = np.searchsorted(items, np.arange(offsets.size), side="left").astype(np.int64)
    if num_items is not None and offsets.size - 1 != num_items:
        raise ValueError(f"item_categories: expected categories for {num_items} items, got {offsets.size - 1}")
    return offsets, categories


def labels_to_csr(item_categories: Sequence[Sequence[str]], num_items: int | None = None) -> CategoryCsr:
    """Category labels (`Dataset.item_categories`: per item a sequence of strings) as a CSR of category ids,
    the labels numbered in sorted order.

    Args:
      item_categories: per item index, its labels (empty for none).
      num_items: if given, the catalogue size: items past the end of the list (added after the data was read)
        have no labels; a longer list is an error.

    Returns:
      `(offsets [n_items + 1] int64, category_ids [nnz] int64)`, as `categories_to_csr`.
    """
    item_categories = [[str(label) for label in labels] for labels in item_categories]
    if num_items is not None:
        if len(item_categories) > num_items:
            raise ValueError(f"item_categories: {len(item_categories)} entries for a catalogue of {num_items} items")
        item_categories += [[] for _ in range(num_items - len(item_categories))]
    vocabulary = {
        label: index for index, label in enumerate(sorted({label for labels in item_categories for label in labels}))
    }
    return categories_to_csr([[vocabulary[label] for label in labels] for labels in item_categories])


def item_popularity(train_by_user: tuple[np.ndarray, np.ndarray], num_items: int) -> np.ndarray:
    """Training users per item, `[num_items]` int64, from per-user sorted item lists (`ranking.csr_by_user`);
    an item a user has twice counts once."""
    offsets, items = (np.asarray(part, np.int64) for part in train_by_user)
    users = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    first = np.ones(items.size, bool)
    first[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    return np.bincount(items[first], minlength=num_items)


def _check_top_items(top_items, num_items: int | None = None, name: str = "") -> np.ndarray:
    top_items = np.asarray(top_items)
    if top_items.ndim != 2 or not np.issubdtype(top_items.dtype, np.integer):
        raise ValueError(f"top_items must be a [users, K] integer array, got {top_items.dtype} {top_items.shape}")
    if top_items.size and top_items.min() < -1:
        raise ValueError(f"top_items: ids must be >= 0, or -1 for an empty slot; got {int(top_items.min())}")
    if num_items is not None and top_items.size and top_items.max() >= num_items:
        raise ValueError(f"top_items holds item {int(top_items.max())}, but {name} covers only {num_items} items")
    return top_items.astype(np.int64)


def _mean_of_user_means(chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean over users of pair_sum / pair_count, skipping users without pairs; NaN if none has any."""
    total, users = 0.0, 0
    for pair_sum, pair_count in chunks:
        counted = pair_count > 0
        total += float(np.sum(pair_sum[counted] / pair_count[counted]))
        users += int(counted.sum())
    return total / users if users else float("nan")


def _upper_pairs(slots: int) -> np.ndarray:
    return np.triu(np.ones((slots, slots), bool), k=1)


def intra_list_diversity(top_items, item_vectors) -> float:
    """ILD by cosine distance: `top_items [u, K]` int, `item_vectors [n_items, d]` float -> float."""
    item_vectors = np.asarray(item_vectors, np.float64)
    top_items = _check_top_items(top_items, item_vectors.shape[0], "item_vectors")
    norms = np.linalg.norm(item_vectors, axis=1, keepdims=True)
    unit = np.divide(item_vectors, norms, out=np.zeros_like(item_vectors), where=norms > 0)
    upper = _upper_pairs(top_items.shape[1])

    def chunks():
        for start in range(0, top_items.shape[0], USER_CHUNK):
            items = top_items[start : start + USER_CHUNK]
            valid = items >= 0
            vectors = unit[np.where(valid, items, 0)]
            pairs = valid[:, :, None] & valid[:, None, :] & upper
            distance = 1.0 - np.einsum("ukd,uld->ukl", vectors, vectors)
            yield np.sum(distance, axis=(1, 2), where=pairs), pairs.sum(axis=(1, 2))

    return _mean_of_user_means(chunks())


def _list_categories(items: np.ndarray, csr: CategoryCsr):
    """One entry per (user, slot, category) of `items [u, K]`, grouped by (user, category).

    Returns (entry_user, entry_slot, group_start): entries sorted by user, category, slot; `group_start` marks
    the first entry of each (user, category) group.
    """
    offsets, categories = csr
    users, slots = np.nonzero(items >= 0)
    listed = items[users, slots]
    lengths = offsets[listed + 1] - offsets[listed]
    first = np.repeat(offsets[listed] - (np.cumsum(lengths) - lengths), lengths)
    entry_category = categories[first + np.arange(first.size)]
    entry_user, entry_slot = np.repeat(users, lengths), np.repeat(slots, lengths)
    order = np.lexsort((entry_slot, entry_category, entry_user))
    entry_user, entry_slot, entry_category = entry_user[order], entry_slot[order], entry_category[order]
    group_start = np.ones(order.size, bool)
    group_start[1:] = (entry_user[1:] != entry_user[:-1]) | (entry_category[1:] != entry_category[:-1])
    return entry_user, entry_slot, group_start


def _shared_categories(items: np.ndarray, csr: CategoryCsr) -> np.ndarray:
    """|A & B| for every slot pair of every list, `[u, K, K]` int64, filled for slot a < slot b only.

    A self-join within each (user, category) group: every group of m slots adds 1 to its m (m - 1) / 2 pairs.
    """
    users, slots = items.shape
    entry_user, entry_slot, group_start = _list_categories(items, csr)
    group = np.cumsum(group_start) - 1
    starts = np.flatnonzero(group_start)
    sizes = np.diff(np.append(starts, entry_user.size))
    later = sizes[group] - 1 - (np.arange(entry_user.size) - starts[group])  # group entries after this one
    left = np.repeat(np.arange(entry_user.size), later)
    right = left + 1 + np.arange(left.size) - np.repeat(np.cumsum(later) - later, later)
    cells = (entry_user[left] * slots + entry_slot[left]) * slots + entry_slot[right]
    return np.bincount(cells, minlength=users * slots * slots).reshape(users, slots, slots)


def category_intra_list_diversity(top_items, item_categories) -> float:
    """ILD by category Jaccard distance over the items that have categories: `top_items [u, K]` int ->
    float. `item_categories`: see `categories_to_csr`."""
    csr = categories_to_csr(item_categories)
    top_items = _check_top_items(top_items, csr[0].size - 1, "item_categories")
    counts = np.diff(csr[0])
    upper = _upper_pairs(top_items.shape[1])

    def chunks():
        for start in range(0, top_items.shape[0], USER_CHUNK):
            items = top_items[start : start + USER_CHUNK]
            size = np.where(items >= 0, counts[np.maximum(items, 0)], 0)
            pairs = (size[:, :, None] > 0) & (size[:, None, :] > 0) & upper
            shared = _shared_categories(items, csr)
            union = size[:, :, None] + size[:, None, :] - shared
            distance = 1.0 - np.divide(shared, union, out=np.zeros(shared.shape), where=pairs)
            yield np.sum(distance, axis=(1, 2), where=pairs), pairs.sum(axis=(1, 2))

    return _mean_of_user_means(chunks())


def category_coverage(top_items, item_categories) -> float:
    """Mean over users of |categories of the list| / |categories in the catalogue|: `[u, K]` int -> float."""
    csr = categories_to_csr(item_categories)
    top_items = _check_top_items(top_items, csr[0].size - 1, "item_categories")
    catalogue = np.unique(csr[1]).size
    if catalogue == 0 or top_items.shape[0] == 0:
        return float("nan")
    covered = np.zeros(top_items.shape[0], np.int64)
    for start in range(0, top_items.shape[0], USER_CHUNK):
        items = top_items[start : start + USER_CHUNK]
        entry_user, _, group_start = _list_categories(items, csr)  # one group per (user, category)
        covered[start : start + items.shape[0]] = np.bincount(entry_user[group_start], minlength=items.shape[0])
    return float(np.mean(covered / catalogue))


def _candidates(candidate_items) -> np.ndarray:
    """Candidate item ids, `[n]` int64, from a count n (items 0..n-1) or an array of ids."""
    if np.ndim(candidate_items) == 0:
        return np.arange(int(candidate_items), dtype=np.int64)
    candidates = np.unique(np.asarray(candidate_items, np.int64))
    if candidates.size and candidates[0] < 0:
        raise ValueError(f"candidate_items: item ids must be >= 0, got {int(candidates[0])}")
    return candidates


def _exposure(top_items: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Number of slots holding each candidate, `[n]` int64."""
    listed = top_items[top_items >= 0]
    position = np.searchsorted(candidates, listed)
    hits = position < candidates.size
    hits[hits] = candidates[position[hits]] == listed[hits]
    return np.bincount(position[hits], minlength=candidates.size)


def catalogue_coverage(top_items, candidate_items) -> float:
    """Distinct candidates recommended / number of candidates: `[u, K]` int, count or `[n]` ids -> float."""
    candidates = _candidates(candidate_items)
    exposure = _exposure(_check_top_items(top_items), candidates)
    return float(np.count_nonzero(exposure) / candidates.size) if candidates.size else float("nan")


def gini_index(top_items, candidate_items) -> float:
    """Gini index of candidate exposure (see the module docstring): `[u, K]` int, count or `[n]` ids -> float."""
    exposure = np.sort(_exposure(_check_top_items(top_items), _candidates(candidate_items))).astype(np.float64)
    n, total = exposure.size, exposure.sum()
    if total == 0:
        return float("nan")
    return float(np.sum((2 * np.arange(1, n + 1) - n - 1) * exposure) / (n * total))


def novelty(top_items, item_popularity, num_users: int) -> float:
    """Mean -log2(popularity) over recommended slots: `[u, K]` int, `item_popularity [n_items]` training user
    counts, `num_users` training users -> float."""
    popularity = np.asarray(item_popularity, np.float64)
    top_items = _check_top_items(top_items, popularity.shape[0], "item_popularity")
    listed = top_items[top_items >= 0]
    if listed.size == 0:
        return float("nan")
    return float(np.mean(np.log2(num_users) - np.log2(np.maximum(popularity[listed], 1.0))))


def beyond_accuracy_metrics(
    top_items,
    ks: Sequence[int],
    *,
    item_vectors=None,
    item_categories=None,
    item_popularity=None,
    num_users: int | None = None,
    candidate_items=None,
) -> dict[str, float]:
    """Every metric whose inputs are given, at every K in `ks`, from the first K slots of `top_items`.

    Args:
      top_items: `[u, K_max]` int item ids, -1 for empty slots.
      ks: list lengths, each <= K_max.
      item_vectors: `[n_items, d]` float representations -> "ild@K".
      item_categories: see `categories_to_csr` -> "ild_category@K", "category_coverage@K".
      item_popularity: `[n_items]` number of training users per item, with `num_users` -> "novelty@K".
      candidate_items: number of candidates (items 0..n-1) or `[n]` ids -> "coverage@K", "gini@K".

    Returns:
      `{"ild@20": ..., ...}` floats; NaN where a metric has nothing to average over.
    """
    top_items = _check_top_items(top_items)
    too_long = [k for k in ks if not 1 <= k <= top_items.shape[1]]
    if too_long:
        raise ValueError(f"ks must lie in 1..{top_items.shape[1]} (the columns of top_items), got {too_long}")
    if item_popularity is not None and num_users is None:
        raise ValueError("novelty needs num_users (the number of training users) together with item_popularity")
    csr = categories_to_csr(item_categories) if item_categories is not None else None
    metrics = {}
    for k in ks:
        head = top_items[:, :k]
        if item_vectors is not None:
            metrics[f"ild@{k}"] = intra_list_diversity(head, item_vectors)
        if csr is not None:
            metrics[f"ild_category@{k}"] = category_intra_list_diversity(head, csr)
            metrics[f"category_coverage@{k}"] = category_coverage(head, csr)
        if item_popularity is not None:
            metrics[f"novelty@{k}"] = novelty(head, item_popularity, num_users)
        if candidate_items is not None:
            metrics[f"coverage@{k}"] = catalogue_coverage(head, candidate_items)
            metrics[f"gini@{k}"] = gini_index(head, candidate_items)
    return metrics
