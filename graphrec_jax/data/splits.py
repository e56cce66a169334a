"""Train/evaluation splits of interactions in index space: ratio, leave-one-out, temporal, cold-item, cold-user.

Every function is deterministic given its seed and keeps rows in their input order
within each part. Evaluation splits are named "test" (and "valid"), "warm" and "cold"
for a cold-item split, or "test" and "cold_users" for a cold-user split. Predefined
splits read from files live in `predefined.py`.
Host code (numpy), not jittable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from graphrec_jax.data.errors import DataError, warn
from graphrec_jax.data.types import EvalSplit, Interactions

Splits = tuple[Interactions, dict[str, EvalSplit]]


# data.split.method: how held-out interactions are chosen ("predefined" reads them from split files).
SPLIT_METHODS = ("ratio", "leave_one_out", "temporal", "cold_item", "cold_user", "predefined")


def index_mask(indices: np.ndarray, size: int) -> np.ndarray:
    """`[size]` bool, True at each of the integer `indices` (a set-membership table for index arrays)."""
    mask = np.zeros(size, dtype=bool)
    mask[indices] = True
    return mask


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted (hash then sort: much faster than `np.unique` on large int arrays)."""
    return np.sort(pd.unique(np.asarray(values)))


def _round(values: np.ndarray) -> np.ndarray:
    """Rounds half up (numpy rounds half to even, which would make 2.5 and 3.5 differ in kind)."""
    return np.floor(values + 0.5).astype(np.int64)


def _per_user_rank(users: np.ndarray, sort_keys: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each row within its user under `sort_keys` (last key sorts first), and its user's count.

    Returns `([n] rank from 0, [n] number of rows of that user)`, both in input row order.
    """
    order = np.lexsort((*sort_keys, users))
    sorted_users = users[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_users[1:] != sorted_users[:-1]]))
    counts = np.diff(np.concatenate([starts, [len(order)]]))
    rank_sorted = np.arange(len(order)) - np.repeat(starts, counts)
    rank = np.empty(len(order), dtype=np.int64)
    count = np.empty(len(order), dtype=np.int64)
    rank[order] = rank_sorted
    count[order] = np.repeat(counts, counts)
    return rank, count


def merge_duplicates(interactions: Interactions, num_items: int, *, source: str) -> tuple[Interactions, int]:
    """Merges rows with the same (user, item) into one, so no pair is counted twice.

    The merged row keeps the highest rating, the latest timestamp and the file position of
    the last occurrence. Warns with the counts when anything was merged.

    Returns:
      (interactions without duplicates, in file order; number of rows removed).
    """
    total = len(interactions)
    keys = interactions.users.astype(np.int64) * num_items + interactions.items
    order = np.lexsort((np.arange(total), keys))
    sorted_keys = keys[order]
    is_start = np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]])
    if is_start.all():
        return interactions, 0
    starts = np.flatnonzero(is_start)
    ends = np.concatenate([starts[1:], [total]]) - 1
    kept = order[ends]
    merged = interactions.subset(kept)
    if interactions.ratings is not None:
        merged.ratings = np.maximum.reduceat(interactions.ratings[order], starts)
    if interactions.timestamps is not None:
        merged.timestamps = np.maximum.reduceat(interactions.timestamps[order], starts)
    merged = merged.subset(np.argsort(kept, kind="stable"))
    removed = total - len(starts)
    num_pairs = int((np.diff(np.concatenate([starts, [total]])) > 1).sum())
    warn(
        f"merged {removed} duplicate rows in {source}: {num_pairs} (user, item) pairs occurred more than "
        "once; each is kept once with its highest rating and latest timestamp"
    )
    return merged, removed


def ratio_split(interactions: Interactions, *, test_ratio: float, valid_ratio: float = 0.0, seed: int = 0) -> Splits:
    """Per user, a random `test_ratio` of their interactions to "test" (and `valid_ratio` to "valid").

    Counts are rounded half up per user and capped so that at least one interaction of every
    user stays in training; a user with a single interaction stays wholly in training.
    """
    rng = np.random.default_rng(seed)
    rank, count = _per_user_rank(interactions.users, (rng.random(len(interactions)),))
    num_test = _round(test_ratio * count)
    num_valid = _round(valid_ratio * count)
    num_valid = np.minimum(num_valid, np.maximum(count - 1 - num_test, 0))
    num_test = np.minimum(num_test, count - 1 - num_valid)
    is_test = rank < num_test
    is_valid = ~is_test & (rank < num_test + num_valid)
    evaluation = {"test": EvalSplit(interactions.subset(is_test))}
    if valid_ratio > 0:
        evaluation = {"valid": EvalSplit(interactions.subset(is_valid)), **evaluation}
    return interactions.subset(~is_test & ~is_valid), evaluation


def leave_one_out_split(interactions: Interactions, *, valid: bool = False) -> Splits:
    """Per user, the latest interaction to "test" and, with `valid`, the one before to "valid".

    Latest means largest timestamp, ties and missing timestamps broken by row (file) order.
    Users with a single interaction stay in training; "valid" takes one only from users with
    at least three, so every user keeps at least one training interaction.
    """
    position = np.arange(len(interactions))
    keys = (position,) if interactions.timestamps is None else (position, interactions.timestamps)
    rank, count = _per_user_rank(interactions.users, keys)
    from_end = count - 1 - rank
    is_test = (from_end == 0) & (count >= 2)
    is_valid = (from_end == 1) & (count >= 3) & valid
    evaluation = {"test": EvalSplit(interactions.subset(is_test))}
    if valid:
        evaluation = {"valid": EvalSplit(interactions.subset(is_valid)), **evaluation}
    return interactions.subset(~is_test & ~is_valid), evaluation


def temporal_split(interactions: Interactions, *, test_ratio: float, valid_ratio: float = 0.0) -> Splits:
    """A global cut in time: the latest `test_ratio` of all interactions to "test".

    With `valid_ratio`, the `valid_ratio` just before them go to "valid". Held-out pairs whose
    user or item never occurs in training are dropped with a `DataWarning` giving the count,
    since no model can score them.
    """
    if interactions.timestamps is None:
        raise DataError(
            "data.split.method='temporal' needs timestamps, and this data has none; set "
            "data.timestamp_column to the column holding them or choose another data.split.method"
        )
    total = len(interactions)
    order = np.argsort(interactions.timestamps, kind="stable")
    num_test = int(_round(np.asarray(test_ratio * total)))
    num_valid = int(_round(np.asarray(valid_ratio * total)))
    part = np.zeros(total, dtype=np.int8)  # 0 train, 1 valid, 2 test
    part[order[total - num_test :]] = 2
    part[order[total - num_test - num_valid : total - num_test]] = 1
    train = interactions.subset(part == 0)
    evaluation = {}
    if valid_ratio > 0:
        evaluation["valid"] = EvalSplit(drop_unseen(train, interactions.subset(part == 1), "valid"))
    evaluation["test"] = EvalSplit(drop_unseen(train, interactions.subset(part == 2), "test"))
    return train, evaluation


def drop_unseen(train: Interactions, held_out: Interactions, name: str, *, check_items: bool = True) -> Interactions:
    """`held_out` without pairs whose user (or, with `check_items`, item) has no training interaction."""
    size = max(int(held_out.users.max(initial=0)), int(train.users.max(initial=0))) + 1
    keep = index_mask(train.users, size)[held_out.users]
    if check_items:
        size = max(int(held_out.items.max(initial=0)), int(train.items.max(initial=0))) + 1
        keep &= index_mask(train.items, size)[held_out.items]
    dropped = int((~keep).sum())
    if dropped:
        what = "user or item" if check_items else "user"
        warn(f"dropped {dropped} of {len(held_out)} {name!r} interactions whose {what} has no training interaction")
    return held_out.subset(keep)


def draw_cold_items(interactions: Interactions, *, cold_item_ratio: float, seed: int) -> np.ndarray:
    """`[c]` sorted int32 indices: a random `cold_item_ratio` of the items that occur in `interactions`."""
    return _draw_share(interactions.items, cold_item_ratio, seed, key="cold_item_ratio", what="items")


def cold_item_split(
    interactions: Interactions,
    *,
    num_items: int,
    cold_items: np.ndarray,
    test_ratio: float,
    valid_ratio: float = 0.0,
    seed: int = 0,
) -> Splits:
    """Every interaction with a `cold_items` item to "cold"; the rest split per user into train/"warm".

    "cold" ranks the cold items only, "warm" (and "valid") rank every other item, so no cold
    item is ever in training. Cold pairs of users with no training interaction are dropped
    with a `DataWarning`.
    """
    cold_items = np.asarray(cold_items, dtype=np.int32)
    is_cold = index_mask(cold_items, num_items)[interactions.items]
    train, warm = ratio_split(interactions.subset(~is_cold), test_ratio=test_ratio, valid_ratio=valid_ratio, seed=seed)
    warm_items = np.flatnonzero(~index_mask(cold_items, num_items)).astype(np.int32)
    evaluation = {name: EvalSplit(split.interactions, warm_items) for name, split in warm.items()}
    evaluation["warm"] = evaluation.pop("test")
    cold = drop_unseen(train, interactions.subset(is_cold), "cold", check_items=False)
    evaluation["cold"] = EvalSplit(cold, cold_items)
    return train, evaluation


def draw_cold_users(interactions: Interactions, *, cold_user_ratio: float, seed: int) -> np.ndarray:
    """`[c]` sorted int32 indices: a random `cold_user_ratio` of the users that occur in `interactions`."""
    return _draw_share(interactions.users, cold_user_ratio, seed, key="cold_user_ratio", what="users with interactions")


def _draw_share(ids: np.ndarray, ratio: float, seed: int, *, key: str, what: str) -> np.ndarray:
    """`[c]` sorted int32: a seeded random `ratio` of the distinct `ids`, at least one and not all."""
    present = sorted_unique(ids)
    count = int(_round(np.asarray(ratio * len(present))))
    if not 0 < count < len(present):
        noun = what.split()[0].removesuffix("s")
        raise DataError(
            f"data.split.{key}={ratio} picks {count} of {len(present)} {what}; "
            f"choose a ratio that leaves at least one cold and one warm {noun}"
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(present, size=count, replace=False)).astype(np.int32)


def cold_user_split(
    interactions: Interactions,
    *,
    cold_users: np.ndarray,
    test_ratio: float,
    valid_ratio: float = 0.0,
    seed: int = 0,
) -> Splits:
    """Every interaction of a `cold_users` user to "cold_users"; the rest split per user into train/"test".

    A cold user has no training interaction at all, so only side information (social
    links, user text) can place them; their social links are not touched here. The other
    users' interactions are split by `ratio_split` ("test", and "valid" with `valid_ratio`).
    Every split ranks all items.
    """
    size = max(int(interactions.users.max(initial=-1)), int(np.max(cold_users, initial=-1))) + 1
    is_cold = index_mask(np.asarray(cold_users, dtype=np.int64), size)[interactions.users]
    train, evaluation = ratio_split(
        interactions.subset(~is_cold), test_ratio=test_ratio, valid_ratio=valid_ratio, seed=seed
    )
    evaluation["cold_users"] = EvalSplit(interactions.subset(is_cold))
    return train, evaluation


def split_interactions(
    interactions: Interactions,
    *,
    method: str,
    num_items: int,
    test_ratio: float,
    valid_ratio: float = 0.0,
    cold_item_ratio: float = 0.2,
    cold_user_ratio: float = 0.1,
    seed: int = 0,
) -> Splits:
    """Dispatches on `method` ("ratio", "leave_one_out", "temporal", "cold_item", "cold_user")."""
    if method == "ratio":
        return ratio_split(interactions, test_ratio=test_ratio, valid_ratio=valid_ratio, seed=seed)
    if method == "leave_one_out":
        return leave_one_out_split(interactions, valid=valid_ratio > 0)
    if method == "temporal":
        return temporal_split(interactions, test_ratio=test_ratio, valid_ratio=valid_ratio)
    if method == "cold_item":
        cold_items = draw_cold_items(interactions, cold_item_ratio=cold_item_ratio, seed=seed)
        return cold_item_split(
            interactions,
            num_items=num_items,
            cold_items=cold_items,
            test_ratio=test_ratio,
            valid_ratio=valid_ratio,
            seed=seed,
        )
    if method == "cold_user":
        cold_users = draw_cold_users(interactions, cold_user_ratio=cold_user_ratio, seed=seed)
        return cold_user_split(
            interactions, cold_users=cold_users, test_ratio=test_ratio, valid_ratio=valid_ratio, seed=seed
        )
    raise DataError(
        f"data.split.method={method!r} is not one of 'ratio', 'leave_one_out', 'temporal', 'cold_item', 'cold_user'"
    )
