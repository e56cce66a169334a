"""Re-ranking of each user's candidate pool for relevance and diversity, on device.

Owns two greedy re-rankers of each user's padded pool: static shapes, a `lax.fori_loop` over the k picks,
vmapped over users in blocks of USER_BLOCK (`lax.map`), one jitted entry point `rerank`:

* MMR, maximal marginal relevance (Carbonell & Goldstein, SIGIR 1998): with lambda = 1 - diversity, step t
  picks argmax_i lambda * r_i - (1 - lambda) * max_{j selected} sim(i, j); the max term is 0 for the first pick.
* DPP, fast greedy MAP inference for a determinantal point process (Chen, Zhang & Zhou, NeurIPS 2018): the
  incremental Cholesky update of their Algorithm 1 and the sliding-window variant of their Algorithm 2.
  Kernel L = Diag(q) S Diag(q), q_i = exp(alpha r_i), alpha = theta / (2 (1 - theta)), theta = 1 - diversity.

Conventions shared by both:
* `relevance [u, p]` float32 are the model scores of each user's pool, in any order. Non-finite scores
  (the -inf of padded slots, NaN) mark slots that are never selected.
* r is the relevance min-max normalised per user over the valid slots to [0, 1] (a constant pool gives all
  ones), so the trade-off set by `diversity` does not depend on the scale of the model's scores.
* `features [u, p, f]` float32 define the similarity through dot products. `kind="cosine"`: sim(i, j) =
  <f_i, f_j>, so pass unit-norm vectors (representations or text embeddings). `kind="jaccard"`: the rows are
  multi-hot category vectors and sim(i, j) = |a & b| / (|a| + |b| - |a & b|) from the dot products; two items
  without categories have similarity 0, and sim(i, i) = 1. `kind="jaccard_labels"`: the same Jaccard
  similarity from `[u, p, m]` int32 category ids, each row an item's distinct ids padded with -1
  (`padded_labels`), for catalogues with thousands of categories, where multi-hot rows would not fit.
* `diversity` is one scalar in [0, 1] for the batch (clipped; may be traced). diversity = 0 returns exactly
  the relevance order of the raw scores, ties to the lower pool position, through a `lax.cond` branch.
  Otherwise ties between equal scores go to the higher raw relevance, then to the lower pool position.
* The result `[u, k]` int32 holds positions into the pool in selection order, -1 after the valid slots run out.

DPP numerics: S gets DIAGONAL_EPSILON on its diagonal; residuals d_i^2 are clamped at RESIDUAL_FLOOR, a pick
below the floor is not added to the Cholesky factor, and once every remaining residual is below it the rest of
the list follows the raw relevance order (see `_dpp_user`).

Cost per user and step: one similarity row against the item just picked, O(p f) (O(p m^2) for label ids),
instead of a [p, p] matrix; the DPP adds the Cholesky update O(p k), or O(p w) plus w - 1 Givens rotations of
O(p) with a window w.

`diversified_top_k` is the serving path around `rerank`: each user's pool from `ranking.top_k_items` (seen
items and candidates handled there), the pool's item features gathered on device, re-ranked in fixed-size
user chunks by one compiled call. `item_features` builds those features from representations, text
features or item categories.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from graphrec_jax.serving.ranking import top_k_items

METHODS = ("mmr", "dpp")
KINDS = ("cosine", "jaccard", "jaccard_labels")

# Added to the diagonal of S so every principal minor is positive definite.
DIAGONAL_EPSILON = 1e-6
# A residual d_i^2 below this (relative to sim(i, i) = 1) means item i lies numerically in the span of the
# selected items: float32 round-off in the incremental update is ~1e-6 after tens of steps, far below it.
RESIDUAL_FLOOR = 1e-4
# Users re-ranked together by one vmapped loop; 64 pools of 200 x 64 floats (3.3 MB) stay in cache.
USER_BLOCK = 64


def normalise_relevance(relevance: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Min-max normalised relevance and the valid-slot mask.

    Args:
      relevance: `[..., p]` float scores; non-finite entries are invalid slots.

    Returns:
      `([..., p] float32 in [0, 1], [..., p] bool valid)`: (x - min) / (max - min) over the valid slots of
      each row, all ones where the valid scores are all equal, 0 at invalid slots.
    """
    relevance = jnp.asarray(relevance, jnp.float32)
    valid = jnp.isfinite(relevance)
    low = jnp.min(jnp.where(valid, relevance, jnp.inf), axis=-1, keepdims=True)
    high = jnp.max(jnp.where(valid, relevance, -jnp.inf), axis=-1, keepdims=True)
    spread = high - low
    varied = spread > 0
    normalised = jnp.where(varied, (relevance - low) / jnp.where(varied, spread, 1.0), 1.0)
    return jnp.where(valid, normalised, 0.0), valid


def similarity_matrix(features: jax.Array, kind: str = "cosine") -> jax.Array:
    """Pairwise similarity `[..., p, p]` float32 of `features [..., p, f]` (see the module docstring).

    The re-rankers never build this matrix; it documents (and tests) what `kind` means.
    """
    _check_choice("kind", kind, KINDS)
    if kind == "jaccard_labels":
        labels = jnp.asarray(features, jnp.int32)
        same = (labels[..., :, None, :, None] == labels[..., None, :, None, :]) & (labels >= 0)[..., :, None, :, None]
        dots = jnp.sum(same, axis=(-2, -1)).astype(jnp.float32)
    else:
        features = jnp.asarray(features, jnp.float32)
        dots = jnp.einsum("...if,...jf->...ij", features, features)
    if kind == "cosine":
        return dots
    sizes = _sizes(features, kind)
    union = sizes[..., :, None] + sizes[..., None, :] - dots
    jaccard = jnp.where(union > 0, dots / jnp.where(union > 0, union, 1.0), 0.0)
    p = features.shape[-2]
    return jnp.where(jnp.eye(p, dtype=bool), 1.0, jaccard)


def relevance_order(relevance: jax.Array, k: int) -> jax.Array:
    """Top-k pool positions by raw relevance, `[u, p]` -> `[u, k]` int32; ties to the lower position, -1 past
    the valid slots. Jittable with static `k <= p`."""
    relevance = jnp.asarray(relevance, jnp.float32)
    masked = jnp.where(jnp.isfinite(relevance), relevance, -jnp.inf)
    values, positions = jax.lax.top_k(masked, k)  # documented: equal values keep the lower index first
    return jnp.where(values > -jnp.inf, positions, -1).astype(jnp.int32)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"rerank: {name} must be one of {choices}, got {value!r}")


def _sizes(features: jax.Array, kind: str) -> jax.Array:
    """|a| (the squared norm, or the number of label ids) of every row of `features [..., p, f]`, float32."""
    if kind == "jaccard_labels":
        return jnp.sum(features >= 0, axis=-1).astype(jnp.float32)
    return jnp.sum(features * features, axis=-1)


def _similarity_row(features: jax.Array, sizes: jax.Array, index: jax.Array, kind: str) -> jax.Array:
    """sim(i, index) for every pool slot i, `[p]`, O(p f); sim(index, index) as in `similarity_matrix`."""
    if kind == "jaccard_labels":  # |a & b| by comparing id lists: O(p m^2), m ~ 10 labels
        own = features[index]
        dots = jnp.sum((features[:, :, None] == own[None, None, :]) & (own >= 0), axis=(1, 2)).astype(jnp.float32)
    else:
        dots = features @ features[index]
    if kind == "cosine":
        return dots
    union = sizes + sizes[index] - dots
    jaccard = jnp.where(union > 0, dots / jnp.where(union > 0, union, 1.0), 0.0)
    return jnp.where(jnp.arange(features.shape[0]) == index, 1.0, jaccard)


class _Pool:
    """What both re-rankers derive from one user's relevance `[p]` before the greedy loop."""

    def __init__(self, relevance: jax.Array):
        self.normalised, self.valid = normalise_relevance(relevance)
        self.relevance = jnp.where(self.valid, relevance, -jnp.inf)
        self.positions = jnp.arange(relevance.shape[0])

    def select(self, score: jax.Array, available: jax.Array) -> jax.Array:
        """argmax of `score [p]` over the available slots, ties to the higher raw relevance and then the lower
        position; -1 when none is available. Scores of available slots must be finite.

        Three plain reductions: XLA's CPU argmax (a variadic reduce) costs about three times as much, and a
        precomputed relevance rank needs a sort that costs more than the whole greedy loop."""
        score = jnp.where(available, score, -jnp.inf)
        best = jnp.max(score)
        tied = available & (score == best)
        tied_relevance = jnp.where(tied, self.relevance, -jnp.inf)
        first = jnp.min(jnp.where(tied & (tied_relevance == jnp.max(tied_relevance)), self.positions, score.shape[0]))
        return jnp.where(best > -jnp.inf, first, -1).astype(jnp.int32)


def _mmr_user(relevance, features, diversity, *, k: int, kind: str) -> jax.Array:
    """MMR for one user: `[p]`, `[p, f]`, scalar -> `[k]` int32."""
    pool = _Pool(relevance)
    trade_off = 1.0 - diversity  # MMR's lambda
    sizes = _sizes(features, kind)

    def step(t, state):
        chosen, available, max_similarity = state
        redundancy = jnp.where(t == 0, 0.0, max_similarity)
        pick = pool.select(trade_off * pool.normalised - (1.0 - trade_off) * redundancy, available)
        row = _similarity_row(features, sizes, pick, kind)
        return chosen.at[t].set(pick), available & (pool.positions != pick), jnp.maximum(max_similarity, row)

    state = (jnp.full((k,), -1, jnp.int32), pool.valid, jnp.full(relevance.shape, -jnp.inf, jnp.float32))
    return jax.lax.fori_loop(0, k, step, state)[0]


def _drop_oldest(factor: jax.Array, residual: jax.Array, column_item: jax.Array):
    """Remove the oldest column from the Cholesky factor (Chen et al. 2018, Algorithm 2).

    `factor [w, p]` holds c_i for every slot i (one row per factor column), and `column_item [w]` the slot
    whose pick made each column (-1 for an all-zero column, see `_dpp_user`). The entries of the column items
    form the lower-triangular Cholesky factor V of S over them. Dropping column 0 leaves [V' v]; Givens
    rotations fold v back into V' column by column, applied to every slot so candidate rows c_i and the rows
    of V move together, and what is left of v in each slot returns to its residual: d_i^2 += a_i^2.
    """
    leftover, rows, column_item = factor[0], list(factor[1:]), column_item[1:]
    for column, item in enumerate(column_item):  # static unroll: w - 1 rotations in order
        real = item >= 0  # an all-zero column rotates by the identity
        diagonal = jnp.where(real, rows[column][item], 1.0)
        spill = jnp.where(real, leftover[item], 0.0)
        radius = jnp.hypot(diagonal, spill)
        cosine, sine = diagonal / radius, spill / radius
        rows[column], leftover = cosine * rows[column] + sine * leftover, cosine * leftover - sine * rows[column]
    factor = jnp.stack([*rows, jnp.zeros_like(leftover)])
    column_item = jnp.concatenate([column_item, jnp.full((1,), -1, column_item.dtype)])
    return factor, residual + leftover * leftover, column_item


def _dpp_user(relevance, features, diversity, *, k: int, kind: str, window: int | None) -> jax.Array:
    """Greedy DPP MAP for one user: `[p]`, `[p, f]`, scalar -> `[k]` int32.

    Runs Algorithm 1 on S + epsilon I rather than on L: for L = Diag(q) S Diag(q) the incremental quantities
    are c_i(L) = q_i c_i(S) and d_i^2(L) = q_i^2 d_i^2(S), so the paper's choice argmax log d_i^2(L) is
    argmax log d_i^2(S) + 2 alpha r_i, which never overflows however large alpha is.

    Residuals are clamped at RESIDUAL_FLOOR. A pick whose residual is below it lies in the span of the factor:
    it is output but adds an all-zero column (its pivot would be ~0). When every remaining residual is that
    small, all scores are floor + 2 alpha r_i, so the rest follow the raw relevance order.

    Window w: factor column j belongs to pick j; once w columns exist, every step drops the oldest after
    adding its own, so each pick is chosen against the previous w - 1 picks.
    """
    pool = _Pool(relevance)
    alpha = (1.0 - diversity) / (2.0 * jnp.maximum(diversity, 1e-12))
    log_quality = 2.0 * alpha * pool.normalised  # log q_i^2
    sizes = _sizes(features, kind)
    diagonal = (sizes if kind == "cosine" else jnp.ones_like(sizes)) + DIAGONAL_EPSILON
    width = window or k

    def step(t, state, *, drops: bool):
        chosen, available, factor, residual, column_item = state
        pick = pool.select(jnp.log(jnp.maximum(residual, RESIDUAL_FLOOR)) + log_quality, available)
        grows = (pick >= 0) & (residual[pick] >= RESIDUAL_FLOOR)
        row = _similarity_row(features, sizes, pick, kind) + jnp.where(pool.positions == pick, DIAGONAL_EPSILON, 0.0)
        pivot = jnp.sqrt(jnp.maximum(residual[pick], RESIDUAL_FLOOR))
        update = jnp.where(grows, (row - factor[:, pick] @ factor) / pivot, 0.0)
        column = jnp.minimum(t, width - 1)
        factor = jax.lax.dynamic_update_index_in_dim(factor, update, column, 0)
        column_item = jax.lax.dynamic_update_index_in_dim(column_item, jnp.where(grows, pick, -1), column, 0)
        residual = residual - update * update
        if drops:
            factor, residual, column_item = _drop_oldest(factor, residual, column_item)
        return chosen.at[t].set(pick), available & (pool.positions != pick), factor, residual, column_item

    state = (
        jnp.full((k,), -1, jnp.int32),
        pool.valid,
        jnp.zeros((width, relevance.shape[0]), jnp.float32),
        diagonal,
        jnp.full((width,), -1, jnp.int32),
    )
    filling = width - 1 if window else k  # steps before the window is full
    state = jax.lax.fori_loop(0, filling, functools.partial(step, drops=False), state)
    if window:
        state = jax.lax.fori_loop(filling, k, functools.partial(step, drops=True), state)
    return state[0]


@functools.partial(jax.jit, static_argnames=("k", "method", "kind", "window"))
def rerank(
    relevance: jax.Array,
    features: jax.Array,
    k: int,
    *,
    diversity: float | jax.Array,
    method: str = "mmr",
    kind: str = "cosine",
    window: int | None = None,
) -> jax.Array:
    """Re-rank every user's pool for relevance and diversity; jitted, static `k`, `method`, `kind`, `window`.

    Args:
      relevance: `[u, p]` float32 scores of each user's pool; -inf (any non-finite value) marks padding.
      features: `[u, p, f]` float32 item vectors of the pool: unit-norm for `kind="cosine"`, multi-hot
        category vectors for `kind="jaccard"`; `[u, p, m]` int32 category ids padded with -1 for
        `kind="jaccard_labels"`. Padded slots may hold anything, NaN included.
      k: list length; a pool shorter than k is padded with invalid slots.
      diversity: scalar in [0, 1]; 0 = exactly the relevance order, 1 = diversity only (MMR) or q = 1 (DPP).
      method: "mmr" or "dpp".
      kind: "cosine", "jaccard" or "jaccard_labels" similarity.
      window: DPP only (static): each pick is chosen against the previous `window - 1` picks only
        (Algorithm 2), for long lists; None or 0 (or >= k) for no window.

    Returns:
      `[u, k]` int32 positions into the pool in selection order, -1 where fewer than k slots are valid.
    """
    _check_choice("method", method, METHODS)
    _check_choice("kind", kind, KINDS)
    if window is not None and window < 0:
        raise ValueError(f"rerank: window must be None, 0 or a positive int, got {window!r}")
    if window and method != "dpp":
        raise ValueError(f"rerank: window applies to method='dpp' only, got method={method!r} with window={window}")
    relevance = jnp.asarray(relevance, jnp.float32)
    features = jnp.asarray(features, jnp.int32 if kind == "jaccard_labels" else jnp.float32)
    if relevance.ndim != 2 or features.ndim != 3 or features.shape[:2] != relevance.shape:
        raise ValueError(
            f"rerank: relevance must be [u, p] and features [u, p, f], got {relevance.shape} and {features.shape}"
        )
    pool = relevance.shape[1]
    if k > pool:  # static: pad the pool with invalid slots so both branches see k <= p
        relevance = jnp.pad(relevance, ((0, 0), (0, k - pool)), constant_values=-jnp.inf)
        features = jnp.pad(
            features, ((0, 0), (0, k - pool), (0, 0)), constant_values=-1 if kind == "jaccard_labels" else 0
        )
    diversity = jnp.clip(jnp.asarray(diversity, jnp.float32), 0.0, 1.0)
    if method == "mmr":
        user_fn = functools.partial(_mmr_user, k=k, kind=kind)
    else:
        user_fn = functools.partial(_dpp_user, k=k, kind=kind, window=window if window and window < k else None)
    # lax.map in blocks of vmapped users: a block's features stay in cache through all k steps.
    return jax.lax.cond(
        diversity == 0,
        lambda: relevance_order(relevance, k),
        lambda: jax.lax.map(lambda pool: user_fn(*pool, diversity), (relevance, features), batch_size=USER_BLOCK),
    )


# ---------------------------------------------------------------------------------------------- serving


def unit_rows(vectors) -> np.ndarray:
    """`[n, d]` rows scaled to unit norm, float32; a zero row stays zero (cosine 0 with everything)."""
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def padded_labels(item_categories: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Category ids per item for `kind="jaccard_labels"`: CSR `(offsets [n + 1], ids [nnz])` (each item's ids
    distinct, see `beyond_accuracy.categories_to_csr`) -> `[n, m]` int32 padded with -1, m = the most
    categories any item has (at least 1)."""
    offsets, ids = (np.asarray(part, np.int64) for part in item_categories)
    counts = np.diff(offsets)
    labels = np.full((counts.size, max(1, int(counts.max(initial=0)))), -1, np.int32)
    rows = np.repeat(np.arange(counts.size), counts)
    labels[rows, np.arange(ids.size) - offsets[rows]] = ids
    return labels


@functools.partial(jax.jit, static_argnames=("k", "method", "kind", "window"))
def _rerank_pools(item_features, pool_items, pool_scores, diversity, *, k, method, kind, window):
    """Re-ranks `[c, p]` pools of item ids (-1 padding) and their scores -> (`[c, k]` items, `[c, k]` scores)."""
    features = item_features[jnp.maximum(pool_items, 0)]
    relevance = jnp.where(pool_items >= 0, pool_scores, -jnp.inf)
    positions = rerank(relevance, features, k, diversity=diversity, method=method, kind=kind, window=window)
    chosen, safe = positions >= 0, jnp.maximum(positions, 0)
    items = jnp.where(chosen, jnp.take_along_axis(pool_items, safe, axis=1), -1)
    scores = jnp.where(chosen, jnp.take_along_axis(pool_scores, safe, axis=1), -jnp.inf)
    return items, scores


def diversified_top_k(
    user_representations,
    item_representations,
    users: np.ndarray,
    k: int,
    *,
    item_features,
    diversity: float,
    pool: int,
    method: str = "mmr",
    kind: str = "cosine",
    window: int | None = None,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    candidate_items: Sequence[int] | np.ndarray | None = None,
    user_chunk_size: int = 512,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` items per user re-ranked for relevance and diversity from each user's top-`pool` items.

    Args:
      user_representations: `[num_users, d]` float32; item_representations: `[num_items, d]` float32.
      users: `[u]` int user indices.
      k: list length.
      item_features: per item, what `rerank` compares: `[num_items, f]` float32 unit-norm vectors
        (`kind="cosine"`, see `unit_rows`), multi-hot rows (`"jaccard"`) or `[num_items, m]` int32 category ids
        padded with -1 (`"jaccard_labels"`, see `padded_labels`).
      diversity: in [0, 1]; 0 keeps the relevance order, so the lists equal `top_k_items`'s.
      pool: candidates per user to re-rank (raised to k, capped at num_items).
      method, kind, window: as in `rerank`.
      exclude, candidate_items, user_chunk_size, backend: as in `ranking.top_k_items`; they decide the pool,
        so excluded and non-candidate items are never recommended.

    Returns:
      (items `[u, k]` int32, scores `[u, k]` float32) in re-ranked order; the scores are the model's relevance
      scores of the chosen items; -1 / -inf where fewer than k candidates remain. Not jittable (host loop over
      user chunks; one compiled call serves every chunk, the last padded).
    """
    users = np.asarray(users, np.int64)
    num_items = int(np.shape(item_representations)[0])
    pool = max(1, min(max(int(pool), k), num_items))
    pool_items, pool_scores = top_k_items(
        user_representations,
        item_representations,
        users,
        pool,
        exclude=exclude,
        candidate_items=candidate_items,
        user_chunk_size=user_chunk_size,
        backend=backend,
    )
    features = jnp.asarray(item_features)
    diversity = jnp.float32(diversity)
    chunk = max(1, min(user_chunk_size, len(users)))
    items = np.full((len(users), k), -1, np.int32)
    scores = np.full((len(users), k), -np.inf, np.float32)
    for first in range(0, len(users), chunk):
        block_items, block_scores = pool_items[first : first + chunk], pool_scores[first : first + chunk]
        rows = len(block_items)
        if rows < chunk:  # the last chunk: padded users have empty pools
            block_items = np.concatenate([block_items, np.full((chunk - rows, pool), -1, np.int32)])
            block_scores = np.concatenate([block_scores, np.full((chunk - rows, pool), -np.inf, np.float32)])
        chosen_items, chosen_scores = _rerank_pools(
            features, block_items, block_scores, diversity, k=k, method=method, kind=kind, window=window
        )
        items[first : first + rows] = np.asarray(chosen_items)[:rows]
        scores[first : first + rows] = np.asarray(chosen_scores)[:rows]
    return items, scores
