"""Fold-in: serving new users and new interactions without retraining (`Recommender.add_interactions`).

LightGCN's representations are linear in the layer-0 embeddings `E`, and `serving.explain` splits a
user's representation over its neighbours: with `L` layers and `M = (1/(L+1)) sum_{m<L} A^m E`,

    z_u = E_u / (L + 1) + sum_h A[u, h] M_h,

over the user's items (`A[u, h] = 1 / sqrt(d_u d_h)`, interaction degrees) and friends. A user with
a new neighbour set is folded in by this formula over its new row of `A`, every other node's `M`
and representation kept as they are: O(degree x dim) per user, batched with one sparse product.
This is the approximation: the items a user joins change degree, so in the grown graph their own
representations, and their other neighbours' weights, would move a little; `Recommender.refresh`
re-propagates the whole graph exactly.

A new user's own embedding `E_u` is chosen by `method`:
  "propagate": `E_u = 0`, the representation is its neighbours' shares alone;
  "solve": a few Adam steps of BPR on `E_u` alone (everything else fixed) over the user's items
    against items drawn uniformly, all new users batched in one compiled call.
`DEFAULT_METHOD` is what ranked best on ml-100k's held-out users (`bench/dynamic.py`, see
docs/BENCHMARKS.md "Dynamic"). Models this formula does not hold for (GCN's ReLU, SocialLGN's
fusion, the text fusions' heads and projections) are folded in by propagating the grown graph
again: exact, and as slow as a full propagation (`supports_local`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.sparse

from graphrec_jax.data.errors import DataError
from graphrec_jax.data.types import Dataset, IdMap, Interactions
from graphrec_jax.graph.build import INTERACTION_EDGE, SOCIAL_EDGE
from graphrec_jax.graph.sparse import Csr, graph_operator, ragged_arange
from graphrec_jax.serving import explain

METHODS = ("solve", "propagate")
DEFAULT_METHOD = "solve"
# The "solve" optimiser, fixed a priori (never tuned on the benchmark's evaluation users).
SOLVE_STEPS = 50
SOLVE_PAIRS = 64  # (positive, negative) pairs per user and step
SOLVE_LEARNING_RATE = 0.02


def supports_local(architecture: str, fusion: str) -> bool:
    """Whether a model (`model.name`, `model.fusion`) folds in by the local formula (LightGCN on id
    embeddings, with or without social links); other models propagate the grown graph again."""
    return architecture == "lightgcn" and fusion == "graph_only"


def read_pairs(table, user_column: str = "user_id", item_column: str = "item_id") -> tuple[list, list]:
    """(raw user ids, raw item ids) of an interactions table: a DataFrame with those columns (others
    ignored) or a sequence of (user, item[, ...]) rows. Raises DataError naming what is missing."""
    if isinstance(table, pd.DataFrame):
        missing = [name for name in (user_column, item_column) if name not in table.columns]
        if missing:
            found = ", ".join(map(repr, map(str, table.columns)))
            raise DataError(
                f"the interactions table has no column {' or '.join(map(repr, missing))} (columns: {found}); "
                "name them user_id and item_id, or pass user_column= and item_column="
            )
        return [plain_id(value) for value in table[user_column].tolist()], [
            plain_id(value) for value in table[item_column].tolist()
        ]
    if isinstance(table, (str, bytes)) or not isinstance(table, Sequence | np.ndarray):
        raise DataError(
            f"interactions must be a DataFrame with columns {user_column}, {item_column} or a list of "
            f"(user, item) pairs, not {type(table).__name__}"
        )
    users, items = [], []
    for number, row in enumerate(table):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence | np.ndarray) or len(row) < 2:
            raise DataError(f"interactions row {number}: {row!r} is not a (user, item) pair")
        users.append(plain_id(row[0]))
        items.append(plain_id(row[1]))
    return users, items


def check_ids(raw_ids: Sequence[Any], id_map: IdMap, *, where: str = "interactions row") -> None:
    """Raises DataError unless every id is a non-blank string or an integer of the kind the map's
    ids are (a new user "196" beside integer ids would be a second user, not user 196); `where`
    names a position in messages, followed by the row number."""
    noun = id_map.kind
    known_kind = None
    if len(id_map):
        first = id_map.raw_ids[0]
        known_kind = str if isinstance(first, str) else int if isinstance(first, int | np.integer) else None
    for row, value in enumerate(raw_ids):
        if isinstance(value, bool | np.bool_) or not isinstance(value, str | int | np.integer):
            raise DataError(
                f"{where} {row}: {noun} id {value!r} is a {type(value).__name__}; ids must be integers or strings"
            )
        if isinstance(value, str) and not value.strip():
            raise DataError(f"{where} {row}: the {noun} id is blank")
        kind = str if isinstance(value, str) else int
        if known_kind is not None and kind is not known_kind and value not in id_map:
            raise DataError(
                f"{where} {row}: {noun} id {value!r} is a {kind.__name__} but the model's {noun} ids are "
                f"{known_kind.__name__}s (like {id_map.raw_ids[0]!r}); pass {known_kind.__name__}({value!r}) "
                f"to name that {noun}"
            )


def plain_id(value):
    """A numpy scalar id as the Python scalar an `IdMap` holds."""
    return value.item() if isinstance(value, np.generic) else value


def grown_id_map(id_map: IdMap, new_ids: Sequence[Any]) -> IdMap:
    """`id_map` with `new_ids` appended (indices of the known ids unchanged)."""
    if not len(new_ids):
        return id_map
    extra = np.empty(len(new_ids), object)
    extra[:] = list(new_ids)
    return IdMap(id_map.kind, np.concatenate([id_map.raw_ids, extra]))


def insert_rows(array, at: int, rows) -> Any:
    """`array` (`[n, ...]`, numpy or jax) with `rows` (`[r, ...]`) inserted before row `at`."""
    if len(rows) == 0:
        return array
    module = jnp if isinstance(array, jax.Array) else np
    rows = module.asarray(rows, dtype=array.dtype)
    return module.concatenate([array[:at], rows, array[at:]])


def new_pairs(train_by_user: tuple[np.ndarray, np.ndarray], users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """`[n]` bool: the (user, item) pairs that are neither training pairs (`train_by_user`, a per-user
    CSR with sorted rows) nor repeats of an earlier pair in the list. O(n log n + the users' rows)."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    offsets, values = train_by_user
    stride = int(max(items.max(initial=0), values.max(initial=0))) + 1
    keys = users * stride + items
    keep = np.zeros(len(users), bool)
    keep[np.unique(keys, return_index=True)[1]] = True
    known = np.unique(users[users < len(offsets) - 1])
    local, entries = rows_of(offsets, known)
    seen = np.repeat(known, np.diff(local)) * stride + values[entries]  # sorted: rows ascend, items sorted
    position = np.minimum(np.searchsorted(seen, keys), max(len(seen) - 1, 0))
    if len(seen):
        keep &= seen[position] != keys
    return keep


def csr_with(
    csr: tuple[np.ndarray, np.ndarray], num_rows: int, users: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A per-user CSR (sorted rows, `ranking.csr_by_user`) grown to `num_rows` rows with the pairs
    `(users, items)` (new to it) added: O(nnz), no global sort."""
    offsets, values = csr
    old_rows = len(offsets) - 1
    lengths = np.zeros(num_rows, np.int64)
    lengths[:old_rows] = np.diff(offsets)
    added = np.bincount(np.asarray(users, np.int64), minlength=num_rows)
    new_offsets = np.zeros(num_rows + 1, np.int64)
    np.cumsum(lengths + added, out=new_offsets[1:])
    new_values = np.empty(int(new_offsets[-1]), np.int32)
    old_lengths = lengths[:old_rows]
    new_values[ragged_arange(new_offsets[:old_rows], old_lengths)] = values
    order = np.lexsort((items, users))
    sorted_users, sorted_items = np.asarray(users, np.int64)[order], np.asarray(items)[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_users, sorted_users)
    new_values[new_offsets[sorted_users] + lengths[sorted_users] + rank] = sorted_items
    for user in np.unique(sorted_users[lengths[sorted_users] > 0]):  # rows that had items: merge in order
        row = slice(new_offsets[user], new_offsets[user + 1])
        new_values[row] = np.sort(new_values[row])
    return new_offsets, new_values


def grown_dataset(dataset: Dataset, user_map: IdMap, users: np.ndarray, items: np.ndarray) -> Dataset:
    """`dataset` with a grown user map and the interactions `(users, items)` (indices, new pairs)
    appended to its training set; evaluation splits are dropped (they described the old data)."""
    train = Interactions(
        np.concatenate([dataset.train.users, np.asarray(users, np.int32)]),
        np.concatenate([dataset.train.items, np.asarray(items, np.int32)]),
    )
    user_text = dataset.user_text
    if user_text is not None:
        user_text = list(user_text) + [{} for _ in range(len(user_map) - dataset.num_users)]
    return dataclasses.replace(dataset, user_map=user_map, train=train, evaluation={}, user_text=user_text)


def grown_text_features(text_features: np.ndarray | None, dataset: Dataset, num_new_users: int, profiles: bool):
    """Per-node text features for a dataset grown by `num_new_users` users (`dataset` is the grown one):
    with `profiles` (users have no text of their own) every user's row is the mean of its items'
    features again, else new users get zero rows. None stays None."""
    if text_features is None:
        return None
    from graphrec_jax.text.features import user_profiles

    old_users = dataset.num_users - num_new_users
    features = np.asarray(text_features)
    items = features[old_users:]
    if profiles:
        users = user_profiles(items, dataset.train, dataset.num_users)
    else:
        users = np.concatenate([features[:old_users], np.zeros((num_new_users, features.shape[1]), features.dtype)])
    return np.concatenate([users, items]).astype(np.float32)


@dataclasses.dataclass
class FoldInState:
    """What LightGCN's local fold-in reads, computed once per model and grown with the data.

    Attributes:
      partial: `M`, `[n_node, d]` float32 (users first, then items; see the module docstring).
      item_degree: `[num_items]` int64 interaction degree of every item in the current graph.
      friends: the social block's user rows (`Csr` over user indices, its weights), or None.
      scale: `1 / (L + 1)`.
      changed: whether any fold-in has happened (the served state then differs from a propagation).
    """

    partial: np.ndarray
    item_degree: np.ndarray
    friends: Csr | None
    scale: float
    changed: bool = False

    @property
    def num_users(self) -> int:
        return len(self.partial) - len(self.item_degree)

    @classmethod
    def from_sources(cls, sources: explain.Sources, num_users: int, num_layers: int) -> FoldInState:
        """The state of a propagated model, from its explanation sources (`explain.compute_sources`)."""
        return cls.from_operator(sources.partial, sources.operator, num_users, num_layers)

    @classmethod
    def from_operator(cls, partial: np.ndarray, operator: Csr, num_users: int, num_layers: int) -> FoldInState:
        """The state from `M` (`[n_node, d]`) and the graph's operator (`graph.sparse.graph_operator`)."""
        kinds = operator.kinds
        row_of = np.repeat(np.arange(len(operator.offsets) - 1), np.diff(operator.offsets))
        is_item_edge = (kinds == INTERACTION_EDGE) & (row_of >= num_users)
        num_items = len(operator.offsets) - 1 - num_users
        item_degree = np.bincount(row_of[is_item_edge] - num_users, minlength=num_items).astype(np.int64)
        friends = None
        social = np.flatnonzero((kinds == SOCIAL_EDGE) & (row_of < num_users))
        if len(social):
            offsets = np.searchsorted(row_of[social], np.arange(num_users + 1)).astype(np.int64)
            friends = Csr(offsets, operator.neighbors[social], operator.weights[social])
        return cls(np.array(partial, np.float32), item_degree, friends, 1.0 / (num_layers + 1))

    def add_users(self, own: np.ndarray) -> None:
        """Appends new users (no friends) to the user block; `own` `[r, d]` is their `E / (L + 1)`,
        which stands for their `M` (read only by friends, and new users have none)."""
        self.partial = insert_rows(self.partial, self.num_users, np.asarray(own, np.float32))
        if self.friends is not None:
            offsets = self.friends.offsets
            grown = np.concatenate([offsets, np.full(len(own), offsets[-1], offsets.dtype)])
            self.friends = dataclasses.replace(self.friends, offsets=grown)

    def neighbour_sum(
        self, offsets: np.ndarray, items: np.ndarray, users: np.ndarray | None, *, transient: bool = False
    ) -> np.ndarray:
        """`sum_h A[u, h] M_h` for each row of a CSR of item lists (`offsets [r + 1]`, `items`), with
        the current item degrees, each row's user counted in them already, or (`transient`) as if it
        were; `users` `[r]` adds the friends of known users (None: no friends). `[r, d]` float32."""
        counts = np.diff(offsets)
        owner = np.repeat(np.arange(len(counts)), counts)
        degree = np.maximum(self.item_degree[items] + int(transient), 1)
        weights = 1.0 / np.sqrt(counts[owner].astype(np.float64) * degree)
        operator = scipy.sparse.csr_matrix(
            (weights.astype(np.float32), np.asarray(items, np.int64), offsets),
            shape=(len(counts), len(self.item_degree)),
        )
        total = np.asarray(operator @ self.partial[self.num_users :], np.float32)
        if users is not None and self.friends is not None:
            known = np.asarray(users) < len(self.friends.offsets) - 1
            rows = np.asarray(users)[known]
            local, entries = rows_of(self.friends.offsets, rows)
            friends = scipy.sparse.csr_matrix(
                (self.friends.weights[entries], self.friends.neighbors[entries], local),
                shape=(len(rows), self.num_users),
            )
            total[known] += np.asarray(friends @ self.partial[: self.num_users], np.float32)
        return total

    def sources(self, own: np.ndarray, representations: np.ndarray, graph) -> explain.Sources:
        """Explanation sources of the served state: the folded-in representations split over the
        current graph's rows (exact for the users folded in last, see `explain`)."""
        return explain.Sources(
            np.asarray(representations, np.float32),
            self.partial,
            np.asarray(own, np.float32) * np.float32(self.scale),
            None,
            graph_operator(graph),
            None,
        )


def set_rows(array, rows: np.ndarray, values) -> Any:
    """A copy of `array` (`[n, d]`, numpy or jax) with `rows` set to `values` (`[r, d]`)."""
    if isinstance(array, jax.Array):
        return array.at[jnp.asarray(rows)].set(jnp.asarray(values, array.dtype))
    array = np.array(array)
    array[rows] = values
    return array


def rows_of(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(local offsets `[r + 1]`, entry indices `[nnz of the rows]`) of the rows `rows` of a CSR."""
    starts, stops = offsets[rows], offsets[rows + 1]
    local = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(stops - starts, out=local[1:])
    return local, ragged_arange(starts, stops - starts)


def solve_embeddings(
    context: np.ndarray,
    offsets: np.ndarray,
    items: np.ndarray,
    item_representations,
    *,
    scale: float,
    l2_weight: float,
    seed: int,
    steps: int = SOLVE_STEPS,
    pairs: int = SOLVE_PAIRS,
    learning_rate: float = SOLVE_LEARNING_RATE,
) -> np.ndarray:
    """Layer-0 embeddings of new users, `[r, d]` float32, by BPR with everything else fixed.

    Each user's representation is `e * scale + context` (`context` `[r, d]`: its neighbours'
    shares); `e` starts at 0 and takes `steps` Adam steps on the mean of
    `softplus(z . (item_n - item_p))` over `pairs` (positive, negative) pairs a step, the positive
    drawn from the user's items (`offsets [r + 1]`, `items`), the negative uniformly from every item
    (LightGCN's sampling), plus `l2_weight / 2 * |e|^2`. Row `j`'s draws depend only on `seed`, `j`
    and its own item count, so the same history gives the same embedding. Host sampling, then one
    compiled call per power-of-two number of users.
    """
    num_users = len(context)
    if num_users == 0:
        return np.zeros_like(context)
    counts = np.diff(offsets)
    padded = 1 << max(0, (num_users - 1).bit_length())
    draws = np.random.default_rng(seed).random((num_users, 2, steps, pairs), dtype=np.float32)
    slots = np.minimum((draws[:, 0] * counts[:, None, None]).astype(np.int64), counts[:, None, None] - 1)
    positives = np.zeros((padded, steps, pairs), np.int32)
    positives[:num_users] = np.asarray(items)[offsets[:-1, None, None] + slots]
    num_items = int(np.shape(item_representations)[0])
    negatives = np.zeros((padded, steps, pairs), np.int32)
    negatives[:num_users] = np.minimum((draws[:, 1] * num_items).astype(np.int64), num_items - 1)
    padded_context = np.zeros((padded, context.shape[1]), np.float32)
    padded_context[:num_users] = context
    solved = _solve(
        jnp.asarray(padded_context),
        jnp.asarray(positives),
        jnp.asarray(negatives),
        jnp.asarray(item_representations, jnp.float32),
        jnp.float32(scale),
        jnp.float32(l2_weight),
        jnp.float32(learning_rate),
    )
    return np.asarray(solved)[:num_users]


@jax.jit
def _solve(context, positives, negatives, items, scale, l2_weight, learning_rate):
    """Adam on `e` `[r, d]`; `positives`, `negatives` `[r, steps, pairs]` int32 item indices."""

    def loss(embedding, positive, negative):
        z = embedding * scale + context
        difference = items[negative] - items[positive]  # [r, pairs, d]
        margins = jnp.einsum("rd,rpd->rp", z, difference)
        return jnp.sum(jnp.mean(jax.nn.softplus(margins), axis=1)) + 0.5 * l2_weight * jnp.sum(embedding**2)

    beta1, beta2, epsilon = 0.9, 0.999, 1e-8

    def step(carry, draws):
        embedding, first, second, count = carry
        gradient = jax.grad(loss)(embedding, *draws)
        count = count + 1
        first = beta1 * first + (1 - beta1) * gradient
        second = beta2 * second + (1 - beta2) * gradient**2
        corrected = (first / (1 - beta1**count)) / (jnp.sqrt(second / (1 - beta2**count)) + epsilon)
        return (embedding - learning_rate * corrected, first, second, count), None

    zeros = jnp.zeros_like(context)
    carry = (zeros, zeros, zeros, jnp.float32(0.0))
    (embedding, _, _, _), _ = jax.lax.scan(step, carry, (jnp.swapaxes(positives, 0, 1), jnp.swapaxes(negatives, 0, 1)))
    return embedding


def latest_is_dynamic(store) -> bool:
    """Whether a checkpoint store's latest step was written by a fold-in save or an incremental
    update: it then supersedes the checkpoints it grew from, whatever their validation metrics."""
    steps = store.steps()
    if not steps:
        return False
    try:
        return bool(store.read_metadata(steps[-1]).get("dynamic"))
    except Exception:  # noqa: BLE001 - an unreadable latest step (an empty folder, say) is not a saved state
        return False


__all__ = [
    "DEFAULT_METHOD",
    "FoldInState",
    "METHODS",
    "csr_with",
    "grown_dataset",
    "grown_id_map",
    "grown_text_features",
    "insert_rows",
    "latest_is_dynamic",
    "new_pairs",
    "plain_id",
    "read_pairs",
    "rows_of",
    "set_rows",
    "solve_embeddings",
    "supports_local",
]
