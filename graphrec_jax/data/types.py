"""The in-memory dataset: id maps, interaction arrays and evaluation splits.

Everything downstream (graph building, sampling, training, evaluation, scoring)
works on contiguous integer indices; `IdMap` is the only place raw ids live.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class UnknownIdError(KeyError):
    """A raw user or item id that the model has never seen."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class IdMap:
    """Bijection between raw ids (any hashable: int, str, ...) and indices 0..n-1.

    Attributes:
      kind: what the ids name, "user" or "item"; used in error messages.
      raw_ids: `[n]` object array; `raw_ids[index]` is the raw id of `index`.
    """

    kind: str
    raw_ids: np.ndarray
    _index: dict = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        raw = np.asarray(self.raw_ids, dtype=object)
        object.__setattr__(self, "raw_ids", raw)
        index = {value: position for position, value in enumerate(raw.tolist())}
        if len(index) != len(raw):
            raise ValueError(f"{self.kind} id map has duplicate raw ids")
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_values(cls, kind: str, values: Sequence[Any]) -> IdMap:
        """Builds a map over the distinct values, in order of first appearance."""
        return cls(kind, np.asarray(list(dict.fromkeys(_plain(v) for v in values)), dtype=object))

    def __len__(self) -> int:
        return len(self.raw_ids)

    def __contains__(self, raw_id) -> bool:
        return _plain(raw_id) in self._index

    def to_index(self, raw_ids: Sequence[Any], *, source: str | None = None) -> np.ndarray:
        """Maps raw ids to `[n]` int32 indices; raises `UnknownIdError` naming the first unknown id."""
        out = np.empty(len(raw_ids), dtype=np.int32)
        for position, raw in enumerate(raw_ids):
            index = self._index.get(_plain(raw))
            if index is None:
                where = f" (in {source})" if source else ""
                sample = ", ".join(repr(v) for v in self.raw_ids[:3].tolist())
                raise UnknownIdError(
                    f"unknown {self.kind} id {raw!r}{where}: the model knows {len(self)} "
                    f"{self.kind}s (for example {sample}); list them with `.{self.kind}_ids`"
                )
            out[position] = index
        return out

    def to_raw(self, indices: np.ndarray) -> np.ndarray:
        """Maps integer indices of any shape to raw ids (object array, same shape)."""
        return self.raw_ids[np.asarray(indices)]

    def to_json(self) -> dict:
        return {"kind": self.kind, "raw_ids": [_json_value(v) for v in self.raw_ids.tolist()]}

    @classmethod
    def from_json(cls, payload: dict) -> IdMap:
        return cls(payload["kind"], np.asarray(payload["raw_ids"], dtype=object))


def _plain(value):
    """Normalises numpy scalars to Python scalars so 5, np.int64(5) and 5.0-free ids agree."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _json_value(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclasses.dataclass
class Interactions:
    """Interactions in index space. All arrays have shape `[n]`.

    Attributes:
      users: int32 user indices.
      items: int32 item indices.
      ratings: float32 ratings, or None for implicit data.
      timestamps: int64 timestamps, or None when the data has none.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None

    def __post_init__(self):
        self.users = np.asarray(self.users, dtype=np.int32)
        self.items = np.asarray(self.items, dtype=np.int32)
        if self.users.shape != self.items.shape or self.users.ndim != 1:
            raise ValueError(f"users {self.users.shape} and items {self.items.shape} must be equal 1-D shapes")
        if self.ratings is not None:
            self.ratings = np.asarray(self.ratings, dtype=np.float32)
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, selection: np.ndarray) -> Interactions:
        """Rows chosen by a boolean mask or an index array."""
        return Interactions(
            self.users[selection],
            self.items[selection],
            None if self.ratings is None else self.ratings[selection],
            None if self.timestamps is None else self.timestamps[selection],
        )


@dataclasses.dataclass
class EvalSplit:
    """Held-out interactions and the items they are ranked among.

    Attributes:
      interactions: the held-out (user, item) pairs.
      candidate_items: `[c]` int32 item indices ranked for this split, or None for all items.
        A cold-item split ranks its cold items only; a warm split ranks the warm items.
    """

    interactions: Interactions
    candidate_items: np.ndarray | None = None


@dataclasses.dataclass
class SocialLinks:
    """User-user links (friends, trust, follows) in index space. Both arrays have shape `[n]`.

    Link `i` says user `users[i]` follows (trusts) user `friends[i]`: in a social model
    `users[i]` aggregates from `friends[i]`. Undirected data holds both directions of every
    friendship, so `n` is twice the number of friendships; directed data holds each link as
    given. Links are distinct, never join a user to themself, and are sorted by
    (user, friend), so each user's friends form one contiguous run.

    Attributes:
      users: int32 user index of each link's follower (the aggregating side).
      friends: int32 user index of each link's followee (the side aggregated from).
    """

    users: np.ndarray
    friends: np.ndarray

    def __post_init__(self):
        self.users = np.asarray(self.users, dtype=np.int32)
        self.friends = np.asarray(self.friends, dtype=np.int32)
        if self.users.shape != self.friends.shape or self.users.ndim != 1:
            raise ValueError(f"users {self.users.shape} and friends {self.friends.shape} must be equal 1-D shapes")
        if (self.users == self.friends).any():
            raise ValueError("social links must not join a user to themself; drop self-links first")
        keys = self.users.astype(np.int64) << 32 | self.friends.astype(np.int64)
        if (np.diff(keys) <= 0).any():
            raise ValueError("social links must be distinct and sorted by (user, friend)")

    def __len__(self) -> int:
        return len(self.users)


@dataclasses.dataclass
class Dataset:
    """A dataset ready for training: id maps, training interactions, evaluation splits, text.

    Attributes:
      user_map, item_map: raw id <-> index maps covering every user and item
        (items with no training interaction, such as cold items, included).
      train: training interactions.
      evaluation: named held-out splits, for example {"test": ...},
        {"valid": ..., "test": ...} or {"warm": ..., "cold": ...}.
      item_text: per item index, a dict of text fields (title, description, ...), or None.
      user_text: per user index, a dict of text fields, or None.
      name: a short human-readable name for logs.
      social: user-user links (see `SocialLinks`), or None when the data has none. Users
        known only from links (no interactions) and users of a cold-user split keep theirs.
      item_categories: per item index, its category or tag labels in order (empty tuple
        for an item without any), or None when the data has no such labels.
    """

    user_map: IdMap
    item_map: IdMap
    train: Interactions
    evaluation: dict[str, EvalSplit]
    item_text: list[dict[str, str]] | None = None
    user_text: list[dict[str, str]] | None = None
    name: str = "dataset"
    social: SocialLinks | None = None
    item_categories: list[tuple[str, ...]] | None = None

    @property
    def num_users(self) -> int:
        return len(self.user_map)

    @property
    def num_items(self) -> int:
        return len(self.item_map)

    def save_id_maps(self, directory: str | Path) -> None:
        """Writes `id_maps.json` (raw ids of users and items) into `directory`."""
        path = Path(directory) / "id_maps.json"
        path.write_text(json.dumps({"user": self.user_map.to_json(), "item": self.item_map.to_json()}))


def load_id_maps(directory: str | Path) -> tuple[IdMap, IdMap]:
    """Reads the (user_map, item_map) written by `Dataset.save_id_maps`."""
    payload = json.loads((Path(directory) / "id_maps.json").read_text())
    return IdMap.from_json(payload["user"]), IdMap.from_json(payload["item"])
