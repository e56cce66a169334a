"""Tests for graphrec_jax.serving.diversity: hand-checked MMR/DPP picks and agreement with NumPy references.

The references below recompute everything from scratch in float64: MMR from the full similarity matrix, and
the greedy DPP from explicit determinants of L = Diag(q) (S + epsilon I) Diag(q) over the factor items.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from graphrec_jax.data.types import Interactions
from graphrec_jax.serving.diversity import (
    DIAGONAL_EPSILON,
    RESIDUAL_FLOOR,
    USER_BLOCK,
    diversified_top_k,
    normalise_relevance,
    padded_labels,
    relevance_order,
    rerank,
    similarity_matrix,
    unit_rows,
)
from graphrec_jax.serving.ranking import csr_by_user, top_k_items

NEG_INF = -np.inf


# ------------------------------------------------------------------------------------------- references


def reference_similarity(features: np.ndarray, kind: str) -> np.ndarray:
    features = features.astype(np.float64)
    dots = features @ features.T
    if kind == "cosine":
        return dots
    sizes = np.diag(dots)
    union = sizes[:, None] + sizes[None, :] - dots
    jaccard = np.divide(dots, union, out=np.zeros_like(dots), where=union > 0)
    np.fill_diagonal(jaccard, 1.0)
    return jaccard


def reference_normalise(relevance: np.ndarray) -> np.ndarray:
    valid = np.isfinite(relevance)
    low, high = relevance[valid].min(), relevance[valid].max()
    normalised = np.ones_like(relevance, np.float64) if high == low else (relevance - low) / (high - low)
    return np.where(valid, normalised, 0.0)


def reference_pick(scores: dict[int, float], relevance: np.ndarray) -> int:
    """Highest score; ties to the higher relevance, then the lower position."""
    return min(scores, key=lambda i: (-scores[i], -relevance[i], i))


def reference_mmr(relevance, features, k, diversity, kind):
    relevance = relevance.astype(np.float64)
    valid = np.isfinite(relevance)
    normalised = reference_normalise(relevance)
    similarity = reference_similarity(features, kind)
    trade_off = 1.0 - diversity
    chosen = []
    for _ in range(k):
        available = [i for i in np.flatnonzero(valid) if i not in chosen]
        if not available:
            chosen.append(-1)
            continue
        scores = {
            i: trade_off * normalised[i] - (1 - trade_off) * (max(similarity[i, chosen]) if chosen else 0.0)
            for i in available
        }
        chosen.append(reference_pick(scores, relevance))
    return chosen


def reference_dpp(relevance, features, k, diversity, kind, window=None):
    """Greedy MAP with explicit determinants; `columns` are the picks still in the window, None for a pick
    whose residual fell below the floor (it adds nothing to the factor)."""
    relevance = relevance.astype(np.float64)
    valid = np.isfinite(relevance)
    alpha = (1.0 - diversity) / (2.0 * diversity)
    quality = np.exp(alpha * reference_normalise(relevance))
    similarity = reference_similarity(features, kind) + DIAGONAL_EPSILON * np.eye(len(relevance))
    kernel = quality[:, None] * similarity * quality[None, :]
    chosen, columns = [], []
    for _ in range(k):
        available = [i for i in np.flatnonzero(valid) if i not in chosen]
        if not available:
            chosen.append(-1)
            continue
        basis = [c for c in columns if c is not None]
        base = np.linalg.det(kernel[np.ix_(basis, basis)]) if basis else 1.0
        # det(L_{B+i}) / det(L_B) = q_i^2 d_i^2 with d_i^2 the residual under S; the floor clamps d_i^2.
        residual = {
            i: np.linalg.det(kernel[np.ix_(basis + [i], basis + [i])]) / base / quality[i] ** 2 for i in available
        }
        scores = {i: np.log(max(residual[i], RESIDUAL_FLOOR)) + 2 * np.log(quality[i]) for i in available}
        pick = reference_pick(scores, relevance)
        chosen.append(pick)
        columns.append(pick if residual[pick] >= RESIDUAL_FLOOR else None)
        if window and len(columns) == window:
            columns.pop(0)
    return chosen


def random_pools(seed, users, pool, dim, kind="cosine", padded=True):
    rng = np.random.default_rng(seed)
    relevance = rng.normal(size=(users, pool)).astype(np.float32)
    if kind == "cosine":
        features = rng.normal(size=(users, pool, dim)).astype(np.float32)
        features /= np.linalg.norm(features, axis=-1, keepdims=True)
    else:
        features = (rng.random((users, pool, dim)) < 0.35).astype(np.float32)
    if padded:  # user u has u padded slots at random positions
        for user in range(users):
            relevance[user, rng.choice(pool, size=user % pool, replace=False)] = NEG_INF
    return relevance, features


def run(relevance, features, k, **options):
    return np.asarray(rerank(np.asarray(relevance, np.float32), np.asarray(features, np.float32), k, **options))


# ------------------------------------------------------------------------------------------- hand-checked

# Items 0 and 1 are near-duplicates (cosine 0.99875), 2 and 3 orthogonal to them and to each other.
NEAR_DUPLICATE = np.array([[1, 0, 0], [1, 0.05, 0], [0, 1, 0], [0, 0, 1]], np.float32)
NEAR_DUPLICATE /= np.linalg.norm(NEAR_DUPLICATE, axis=1, keepdims=True)
NEAR_DUPLICATE_RELEVANCE = np.array([0.9, 0.8, 0.5, 0.1], np.float32)  # normalised: 1, 0.875, 0.5, 0


def test_normalise_relevance_min_max_over_valid_slots():
    normalised, valid = normalise_relevance(np.array([[2.0, 4.0, NEG_INF, 3.0], [5.0, 5.0, NEG_INF, np.nan]]))
    np.testing.assert_allclose(np.asarray(normalised), [[0.0, 1.0, 0.0, 0.5], [1.0, 1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(np.asarray(valid), [[True, True, False, True], [True, True, False, False]])


@pytest.mark.parametrize("method", ["mmr", "dpp"])
def test_diversity_zero_is_the_relevance_order_with_ties_to_the_lower_position(method):
    relevance = np.array([[0.5, 0.9, 0.5, 0.9, NEG_INF, 0.7]], np.float32)
    features = np.ones((1, 6, 2), np.float32)  # all identical: any diversity term would reorder
    np.testing.assert_array_equal(run(relevance, features, 6, diversity=0.0, method=method), [[1, 3, 5, 0, 2, -1]])
    np.testing.assert_array_equal(np.asarray(relevance_order(relevance, 6)), [[1, 3, 5, 0, 2, -1]])


@pytest.mark.parametrize("method", ["mmr", "dpp"])
def test_diversity_skips_the_near_duplicate(method):
    relevance, features = NEAR_DUPLICATE_RELEVANCE[None], NEAR_DUPLICATE[None]
    # MMR, lambda 0.5: step 2 scores item 1 at 0.5 * 0.875 - 0.5 * 0.99875 = -0.062, item 2 at 0.25, item 3 at
    # 0; step 3 item 1 -0.062 against item 3 at 0. DPP, alpha 0.5, score log d^2 + r: step 2 item 1
    # log(0.0025) + 0.875 = -5.12, item 2 log(1) + 0.5, item 3 0; step 3 item 1 lies in span{e1, e2}.
    np.testing.assert_array_equal(run(relevance, features, 3, diversity=0.5, method=method), [[0, 2, 3]])
    np.testing.assert_array_equal(run(relevance, features, 3, diversity=0.0, method=method), [[0, 1, 2]])


def test_dpp_window_forgets_the_oldest_pick():
    # Item 2 duplicates item 0. Normalised relevance 1, 8/9, 7/9, 0 and diversity 0.5 give score log d^2 + r.
    features = np.array([[[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]]], np.float32)
    relevance = np.array([[1.0, 0.9, 0.8, 0.1]], np.float32)
    # No window: after {0, 1} item 2 has d^2 ~ 0 (score log(1e-4) + 7/9 = -8.4) and item 3 scores 0.
    np.testing.assert_array_equal(run(relevance, features, 3, diversity=0.5, method="dpp"), [[0, 1, 3]])
    # Window 2: the third pick is diverse against item 1 only, so item 2 (d^2 = 1, score 7/9) beats item 3.
    np.testing.assert_array_equal(run(relevance, features, 3, diversity=0.5, method="dpp", window=2), [[0, 1, 2]])
    for no_window in (None, 0, 3, 10):  # a window as long as the list is no window
        np.testing.assert_array_equal(
            run(relevance, features, 3, diversity=0.5, method="dpp", window=no_window), [[0, 1, 3]]
        )


@pytest.mark.parametrize("method, diversity", [("dpp", 0.9), ("dpp", 1.0), ("mmr", 1.0)])
def test_when_nothing_diverse_is_left_the_rest_follow_relevance(method, diversity):
    relevance = np.array([[0.2, 0.9, 0.5, 0.7]], np.float32)
    features = np.ones((1, 4, 1), np.float32)  # every item the same: after one pick every residual is ~0
    np.testing.assert_array_equal(run(relevance, features, 4, diversity=diversity, method=method), [[1, 3, 2, 0]])


def test_jaccard_similarity_from_multi_hot_categories():
    # Category sets {a, b}, {a, b}, {a, c}, {d}, {}: |{a,b} & {a,c}| / |{a,b,c}| = 1/3; the empty set is
    # similar to nothing but itself.
    categories = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], np.float32)
    third = 1 / 3
    expected = [
        [1, 1, third, 0, 0],
        [1, 1, third, 0, 0],
        [third, third, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1],
    ]
    np.testing.assert_allclose(np.asarray(similarity_matrix(categories, "jaccard")), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(similarity_matrix(categories, "cosine")), categories @ categories.T)


@pytest.mark.parametrize("method", ["mmr", "dpp"])
def test_jaccard_kind_uses_jaccard_not_raw_dot_products(method):
    categories = np.array([[[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]]], np.float32)
    relevance = np.array([[1.0, 0.9, 0.8, 0.1]], np.float32)  # normalised 1, 8/9, 7/9, 0
    # Jaccard, MMR lambda 0.5: step 2 item 1 0.444 - 0.5, item 2 0.389 - 0.167 = 0.222, item 3 0 -> 2, then 3.
    # DPP: step 2 item 1 d^2 ~ 0, item 2 log(8/9) + 7/9 = 0.66, item 3 log(1) + 0 -> 2, then 3.
    np.testing.assert_array_equal(
        run(relevance, categories, 3, diversity=0.5, method=method, kind="jaccard"), [[0, 2, 3]]
    )
    # The same vectors read as cosine (raw dot products: sim(0, 2) = 1, sim(0, 1) = 2) push item 2 below item 3.
    np.testing.assert_array_equal(run(relevance, categories, 3, diversity=0.5, method="mmr"), [[0, 3, 2]])


# ---------------------------------------------------------------------------------------------- padding


@pytest.mark.parametrize("method", ["mmr", "dpp"])
@pytest.mark.parametrize("padding_features", ["garbage", "nan"])
def test_padded_slots_are_never_selected(method, padding_features):
    rng = np.random.default_rng(3)
    relevance = rng.normal(size=(3, 8)).astype(np.float32)
    features = rng.normal(size=(3, 8, 4)).astype(np.float32)
    features /= np.linalg.norm(features, axis=-1, keepdims=True)
    padded = np.zeros((3, 8), bool)
    padded[0, [1, 4]] = True
    padded[1, :6] = True  # two valid slots for k = 5
    padded[2, :] = True  # nothing valid
    relevance[padded] = NEG_INF
    features[padded] = np.nan if padding_features == "nan" else 1e3 * rng.normal(size=(padded.sum(), 4))
    for diversity in (0.0, 0.4, 1.0):
        chosen = run(relevance, features, 5, diversity=diversity, method=method)
        assert not any(padded[user, position] for user in range(3) for position in chosen[user] if position >= 0)
        assert len(set(chosen[0])) == 5 and (chosen[0] >= 0).all()
        assert sorted(chosen[1, :2]) == [6, 7] and (chosen[1, 2:] == -1).all()
        assert (chosen[2] == -1).all()


def test_pool_shorter_than_k_is_padded_with_minus_one():
    relevance = np.array([[0.1, 0.3, 0.2]], np.float32)
    features = np.eye(3, dtype=np.float32)[None]
    for method in ("mmr", "dpp"):
        np.testing.assert_array_equal(run(relevance, features, 5, diversity=0.5, method=method), [[1, 2, 0, -1, -1]])


# ------------------------------------------------------------------------------------ NumPy references


@pytest.mark.parametrize(
    "seed, dim, kind, diversity",
    [(0, 16, "cosine", 0.3), (1, 6, "cosine", 0.7), (2, 5, "jaccard", 0.5), (3, 16, "cosine", 0.95)],
)
def test_mmr_matches_the_numpy_reference(seed, dim, kind, diversity):
    relevance, features = random_pools(seed, users=6, pool=24, dim=dim, kind=kind)
    chosen = run(relevance, features, 10, diversity=diversity, method="mmr", kind=kind)
    for user in range(6):
        assert chosen[user].tolist() == reference_mmr(relevance[user], features[user], 10, diversity, kind)


@pytest.mark.parametrize("window", [None, 1, 3, 5])
@pytest.mark.parametrize(
    "seed, dim, kind, diversity",
    # dim 6 < k: the span fills after 6 picks, so the floor and the relevance fallback are exercised too.
    [(0, 16, "cosine", 0.5), (1, 6, "cosine", 0.8), (2, 6, "jaccard", 0.6), (3, 32, "cosine", 0.3)],
)
def test_dpp_matches_the_numpy_determinant_reference(seed, dim, kind, diversity, window):
    relevance, features = random_pools(seed, users=5, pool=24, dim=dim, kind=kind)
    chosen = run(relevance, features, 12, diversity=diversity, method="dpp", kind=kind, window=window)
    for user in range(5):
        expected = reference_dpp(relevance[user], features[user], 12, diversity, kind, window)
        assert chosen[user].tolist() == expected, f"user {user}"


def test_dpp_reference_check_is_not_vacuous():
    # Diversity must change these lists, else agreement with the reference would prove little.
    relevance, features = random_pools(0, users=5, pool=24, dim=16, padded=False)
    diverse = run(relevance, features, 12, diversity=0.5, method="dpp")
    windowed = run(relevance, features, 12, diversity=0.5, method="dpp", window=3)
    plain = np.asarray(relevance_order(relevance, 12))
    assert (diverse != plain).any(axis=1).all()
    assert (windowed != diverse).any()


# ------------------------------------------------------------------------------------- batching and jit


@pytest.mark.parametrize("method, window", [("mmr", None), ("dpp", None), ("dpp", 4)])
def test_batched_users_match_one_user_at_a_time(method, window):
    users = USER_BLOCK + 6  # a full block plus a remainder
    relevance, features = random_pools(5, users=users, pool=16, dim=8)
    batched = run(relevance, features, 8, diversity=0.6, method=method, window=window)
    for user in range(0, users, 7):
        alone = run(
            relevance[user : user + 1], features[user : user + 1], 8, diversity=0.6, method=method, window=window
        )
        np.testing.assert_array_equal(batched[user], alone[0])


def test_traced_diversity_switches_between_relevance_order_and_diversity():
    relevance, features = NEAR_DUPLICATE_RELEVANCE[None], NEAR_DUPLICATE[None]
    calls = []

    @jax.jit
    def rerank_at(diversity):
        calls.append(diversity)  # traced once
        return rerank(relevance, features, 3, diversity=diversity, method="dpp")

    np.testing.assert_array_equal(np.asarray(rerank_at(0.0)), [[0, 1, 2]])
    np.testing.assert_array_equal(np.asarray(rerank_at(0.5)), [[0, 2, 3]])
    assert len(calls) == 1


def test_bad_arguments_name_the_fix():
    relevance, features = NEAR_DUPLICATE_RELEVANCE[None], NEAR_DUPLICATE[None]
    with pytest.raises(ValueError, match="method must be one of"):
        rerank(relevance, features, 2, diversity=0.5, method="xquad")
    with pytest.raises(ValueError, match="kind must be one of"):
        rerank(relevance, features, 2, diversity=0.5, kind="euclidean")
    with pytest.raises(ValueError, match="window applies to method='dpp' only"):
        rerank(relevance, features, 2, diversity=0.5, method="mmr", window=3)
    with pytest.raises(ValueError, match=r"features \[u, p, f\]"):
        rerank(relevance, features[0], 2, diversity=0.5)


# ----------------------------------------------------------------------------------- category label ids


def as_label_ids(multi_hot: np.ndarray) -> np.ndarray:
    """`[..., p, f]` multi-hot rows -> `[..., p, f]` category ids, -1 padded at the end (order shuffled)."""
    rng = np.random.default_rng(0)
    ids = np.where(multi_hot > 0, np.arange(multi_hot.shape[-1]), -1)
    ids = rng.permuted(ids, axis=-1)  # the order of an item's ids does not matter
    return ids.astype(np.int32)


def test_jaccard_labels_similarity_equals_multi_hot_jaccard():
    _, features = random_pools(7, users=2, pool=9, dim=6, kind="jaccard", padded=False)
    np.testing.assert_allclose(
        np.asarray(similarity_matrix(as_label_ids(features), "jaccard_labels")),
        np.asarray(similarity_matrix(features, "jaccard")),
        rtol=1e-6,
    )


@pytest.mark.parametrize("method, window", [("mmr", None), ("dpp", None), ("dpp", 3)])
def test_jaccard_labels_rerank_equals_multi_hot_jaccard(method, window):
    relevance, features = random_pools(8, users=7, pool=20, dim=6, kind="jaccard")
    labels = as_label_ids(features)
    for diversity in (0.3, 0.8):
        multi_hot = run(relevance, features, 8, diversity=diversity, method=method, kind="jaccard", window=window)
        ids = np.asarray(
            rerank(relevance, labels, 8, diversity=diversity, method=method, kind="jaccard_labels", window=window)
        )
        np.testing.assert_array_equal(ids, multi_hot)


def test_padded_labels_and_unit_rows():
    offsets, ids = np.array([0, 2, 2, 5]), np.array([4, 7, 0, 1, 2])
    np.testing.assert_array_equal(padded_labels((offsets, ids)), [[4, 7, -1], [-1, -1, -1], [0, 1, 2]])
    assert padded_labels((np.array([0, 0]), np.array([], np.int64))).shape == (1, 1)
    np.testing.assert_allclose(unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])


# ---------------------------------------------------------------------------------- diversified_top_k


def random_model(seed=0, num_users=9, num_items=30, dim=4):
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(num_users, dim)).astype(np.float32)
    items = rng.normal(size=(num_items, dim)).astype(np.float32)
    seen = csr_by_user(
        Interactions(np.repeat(np.arange(num_users), 3), rng.integers(0, num_items, 3 * num_users)), num_users
    )
    return users, items, seen


@pytest.mark.parametrize("method", ["mmr", "dpp"])
def test_diversified_top_k_at_zero_is_top_k_items(method):
    users, items, seen = random_model()
    candidates = np.arange(0, 30, 2)
    for options in ({"exclude": seen}, {"exclude": seen, "candidate_items": candidates}, {}):
        expected = top_k_items(users, items, np.arange(9), 5, user_chunk_size=4, **options)
        got = diversified_top_k(
            users,
            items,
            np.arange(9),
            5,
            item_features=unit_rows(items),
            diversity=0.0,
            pool=12,
            method=method,
            user_chunk_size=4,
            **options,
        )
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("method", ["mmr", "dpp"])
def test_diversified_top_k_reranks_the_pool_only(method):
    users, items, seen = random_model(1)
    candidates = np.arange(1, 30, 2)
    pool_items, _ = top_k_items(users, items, np.arange(9), 10, exclude=seen, candidate_items=candidates)

    def rerank(user_chunk_size):
        return diversified_top_k(
            users,
            items,
            np.arange(9),
            5,
            item_features=unit_rows(items),
            diversity=0.7,
            pool=10,
            method=method,
            exclude=seen,
            candidate_items=candidates,
            user_chunk_size=user_chunk_size,
        )

    chosen, scores = rerank(4)
    offsets, seen_items = seen
    for user in range(9):
        assert set(chosen[user]) <= set(pool_items[user]) and len(set(chosen[user])) == 5
        assert not set(chosen[user]) & set(seen_items[offsets[user] : offsets[user + 1]])
        np.testing.assert_allclose(scores[user], items[chosen[user]] @ users[user], rtol=1e-5)
    assert (chosen != pool_items[:, :5]).any()  # diversity changed some lists
    np.testing.assert_array_equal(rerank(64)[0], chosen)  # one chunk: the same lists


def test_diversified_top_k_with_few_candidates_pads():
    users, items, _ = random_model(2)
    chosen, scores = diversified_top_k(
        users, items, np.arange(3), 5, item_features=unit_rows(items), diversity=0.5, pool=50, candidate_items=[3, 4]
    )
    assert (np.sort(chosen[:, :2], axis=1) == [3, 4]).all() and (chosen[:, 2:] == -1).all()
    assert np.isneginf(scores[:, 2:]).all()
