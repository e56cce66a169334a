"""Tests for graphrec_jax.serving.beyond_accuracy against hand-computed values, RecBole style."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from graphrec_jax.serving import beyond_accuracy
from graphrec_jax.serving.beyond_accuracy import (
    beyond_accuracy_metrics,
    catalogue_coverage,
    categories_to_csr,
    category_coverage,
    category_intra_list_diversity,
    gini_index,
    intra_list_diversity,
    novelty,
)

# Six items. Vectors: 0 = (1, 0), 1 = (0, 1), 2 = (1, 1) (cosine 1/sqrt 2 with 0 and 1), 3 = (-1, 0)
# (opposite to 0), 4 = (0, 2), 5 = (0, 0).
ITEM_VECTORS = np.array([[1, 0], [0, 1], [1, 1], [-1, 0], [0, 2], [0, 0]], np.float64)
# Categories: 0 {0, 1}, 1 {1, 2}, 2 none, 3 {3}, 4 {0, 1, 2, 3}, 5 {4}: five distinct in the catalogue.
ITEM_CATEGORIES = [(0, 1), (1, 2), (), (3,), (0, 1, 2, 3), (4,)]
# Training users per item, out of 8 training users; item 3 has none and counts as 1.
ITEM_POPULARITY = np.array([4, 2, 1, 0, 8, 3])
TOP_ITEMS = np.array([[0, 1, 2], [3, 2, -1], [0, 4, 3]])


def test_ild_by_cosine_distance_by_hand():
    top_items = np.array([[0, 1, 2], [0, 3, -1], [2, -1, -1]])
    # user 0: pairs (0, 1) 1 - 0, (0, 2) and (1, 2) 1 - 1/sqrt 2: mean (3 - sqrt 2) / 3 = 0.528595
    # user 1: pair (0, 3) 1 - (-1) = 2; user 2: one item, skipped.
    assert intra_list_diversity(top_items, ITEM_VECTORS) == pytest.approx(((3 - math.sqrt(2)) / 3 + 2) / 2)
    assert intra_list_diversity(top_items, ITEM_VECTORS) == pytest.approx(1.264298, abs=1e-6)
    # Lists of 2: user 0 (0, 1) distance 1, user 1 (0, 3) distance 2, user 2 skipped.
    assert intra_list_diversity(top_items[:, :2], ITEM_VECTORS) == pytest.approx(1.5)


def test_ild_scale_free_and_zero_vectors():
    # 1 and 4 point the same way (cosine 1, distance 0); the zero vector 5 has cosine 0 with everything.
    assert intra_list_diversity(np.array([[1, 4]]), ITEM_VECTORS) == pytest.approx(0.0)
    assert intra_list_diversity(np.array([[1, 5]]), ITEM_VECTORS) == pytest.approx(1.0)


def test_ild_without_any_pair_is_nan():
    assert math.isnan(intra_list_diversity(np.array([[0, -1], [-1, -1]]), ITEM_VECTORS))


def test_category_ild_by_hand():
    # user 0: item 2 has no category; (0, 1): {0,1} & {1,2} = {1} of 3 -> distance 2/3.
    # user 1: only item 3 has categories -> skipped.
    # user 2: (0, 4) 2 shared of 4 -> 1/2; (0, 3) 0 of 3 -> 1; (4, 3) 1 of 4 -> 3/4; mean 0.75.
    expected = (2 / 3 + 0.75) / 2
    assert category_intra_list_diversity(TOP_ITEMS, ITEM_CATEGORIES) == pytest.approx(expected)
    assert category_intra_list_diversity(TOP_ITEMS, ITEM_CATEGORIES) == pytest.approx(0.708333, abs=1e-6)


def test_category_coverage_by_hand():
    # 5 categories in the catalogue. user 0 {0, 1, 2}; user 1 {3}; user 2 {0, 1, 2, 3}: (3 + 1 + 4) / 15.
    assert category_coverage(TOP_ITEMS, ITEM_CATEGORIES) == pytest.approx(8 / 15)
    # First slots only: {0, 1}, {3}, {0, 1}.
    assert category_coverage(TOP_ITEMS[:, :1], ITEM_CATEGORIES) == pytest.approx(5 / 15)


def test_catalogue_coverage_and_gini_by_hand():
    # Exposure of items 0..5: 2, 1, 2, 2, 1, 0; sorted 0, 1, 1, 2, 2, 2 (sum 8) with weights 2i - 7 =
    # -5, -3, -1, 1, 3, 5: (-3 - 1 + 2 + 6 + 10) / (6 * 8) = 14 / 48.
    assert catalogue_coverage(TOP_ITEMS, 6) == pytest.approx(5 / 6)
    assert gini_index(TOP_ITEMS, 6) == pytest.approx(14 / 48)
    # First slots: exposure 2, 0, 0, 1, 0, 0 -> sorted 0, 0, 0, 0, 1, 2 (sum 3): (3 + 10) / 18.
    assert catalogue_coverage(TOP_ITEMS[:, :1], 6) == pytest.approx(2 / 6)
    assert gini_index(TOP_ITEMS[:, :1], 6) == pytest.approx(13 / 18)
    # Candidates 0..3 only (item 4 is then no candidate): exposure 2, 1, 2, 2 -> sorted 1, 2, 2, 2 (sum 7),
    # weights -3, -1, 1, 3: 3 / 28; all four recommended.
    assert catalogue_coverage(TOP_ITEMS, np.array([3, 1, 2, 0])) == pytest.approx(1.0)
    assert gini_index(TOP_ITEMS, np.array([3, 1, 2, 0])) == pytest.approx(3 / 28)


def test_gini_extremes():
    assert gini_index(np.array([[0], [1], [2], [3]]), 4) == pytest.approx(0.0)  # equal exposure
    assert gini_index(np.array([[0], [0], [0], [0]]), 4) == pytest.approx(0.75)  # 1 - 1/n
    assert math.isnan(gini_index(np.array([[-1]]), 4))


def test_novelty_by_hand():
    # -log2(count / 8): item 0 1, item 1 2, item 2 3, item 3 (count 0 -> 1) 3, item 4 0.
    # Slots: 1 + 2 + 3, 3 + 3, 1 + 0 + 3 = 16 over 8 recommended slots (the -1 slot is not one).
    assert novelty(TOP_ITEMS, ITEM_POPULARITY, 8) == pytest.approx(2.0)
    assert novelty(TOP_ITEMS[:, :1], ITEM_POPULARITY, 8) == pytest.approx(5 / 3)


def test_entry_point_keys_and_values():
    metrics = beyond_accuracy_metrics(
        TOP_ITEMS,
        [1, 3],
        item_vectors=ITEM_VECTORS,
        item_categories=ITEM_CATEGORIES,
        item_popularity=ITEM_POPULARITY,
        num_users=8,
        candidate_items=6,
    )
    assert sorted(metrics) == sorted(
        f"{name}@{k}"
        for name in ("ild", "ild_category", "category_coverage", "novelty", "coverage", "gini")
        for k in (1, 3)
    )
    assert metrics["ild_category@3"] == pytest.approx(0.708333, abs=1e-6)
    assert math.isnan(metrics["ild_category@1"]) and math.isnan(metrics["ild@1"])  # one item per list
    assert metrics["category_coverage@3"] == pytest.approx(8 / 15)
    assert metrics["novelty@3"] == pytest.approx(2.0)
    assert metrics["coverage@3"] == pytest.approx(5 / 6)
    assert metrics["gini@1"] == pytest.approx(13 / 18)
    # user 0 (0, 1, 2): (3 - sqrt 2) / 3; user 1 (3, 2): 1 - (-1/sqrt 2); user 2 (0, 4, 3): 1, 2, 1 -> 4/3.
    expected_ild = ((3 - math.sqrt(2)) / 3 + 1 + 1 / math.sqrt(2) + 4 / 3) / 3
    assert metrics["ild@3"] == pytest.approx(expected_ild)


def test_entry_point_only_computes_what_it_has_inputs_for():
    assert sorted(beyond_accuracy_metrics(TOP_ITEMS, [2], candidate_items=6)) == ["coverage@2", "gini@2"]
    assert beyond_accuracy_metrics(TOP_ITEMS, [2]) == {}


def test_bad_inputs_name_the_fix():
    with pytest.raises(ValueError, match="ks must lie in 1..3"):
        beyond_accuracy_metrics(TOP_ITEMS, [5], candidate_items=6)
    with pytest.raises(ValueError, match="needs num_users"):
        beyond_accuracy_metrics(TOP_ITEMS, [3], item_popularity=ITEM_POPULARITY)
    with pytest.raises(ValueError, match="covers only 2 items"):
        intra_list_diversity(TOP_ITEMS, ITEM_VECTORS[:2])
    with pytest.raises(ValueError, match="-1 for an empty slot"):
        novelty(np.array([[0, -2]]), ITEM_POPULARITY, 8)
    with pytest.raises(ValueError, match="offsets must be 1-D, start at 0"):
        categories_to_csr((np.array([0, 2, 3]), np.array([1, 2])))


def test_csr_and_list_forms_agree_and_duplicates_collapse():
    offsets = np.array([0, 3, 5, 5, 6, 10, 11])
    ids = np.array([1, 0, 1, 2, 1, 3, 3, 2, 1, 0, 4])  # item 0 lists category 1 twice
    csr = categories_to_csr((offsets, ids))
    np.testing.assert_array_equal(csr[0], categories_to_csr(ITEM_CATEGORIES)[0])
    np.testing.assert_array_equal(csr[1], categories_to_csr(ITEM_CATEGORIES)[1])
    assert category_intra_list_diversity(TOP_ITEMS, (offsets, ids)) == pytest.approx(0.708333, abs=1e-6)


@pytest.mark.parametrize("user_chunk", [4096, 7])
def test_vectorised_metrics_match_a_per_user_loop(monkeypatch, user_chunk):
    monkeypatch.setattr(beyond_accuracy, "USER_CHUNK", user_chunk)
    rng = np.random.default_rng(0)
    num_items, num_categories, users, slots = 40, 7, 25, 6
    categories = [tuple(rng.choice(num_categories, size=rng.integers(0, 4), replace=False)) for _ in range(num_items)]
    top_items = np.stack([rng.choice(num_items, size=slots, replace=False) for _ in range(users)])
    top_items[rng.random(top_items.shape) < 0.2] = -1

    vectors = rng.normal(size=(num_items, 3))
    per_user_ild, per_user_coverage, per_user_vector_ild = [], [], []
    catalogue = set().union(*map(set, categories))
    for row in top_items:
        sets = [set(categories[item]) for item in row if item >= 0 and categories[item]]
        per_user_coverage.append(len(set().union(*sets)) / len(catalogue))
        distances = [1 - len(a & b) / len(a | b) for a, b in itertools.combinations(sets, 2)]
        if distances:
            per_user_ild.append(np.mean(distances))
        unit = [vectors[item] / np.linalg.norm(vectors[item]) for item in row if item >= 0]
        if len(unit) > 1:
            per_user_vector_ild.append(np.mean([1 - a @ b for a, b in itertools.combinations(unit, 2)]))
    assert category_intra_list_diversity(top_items, categories) == pytest.approx(np.mean(per_user_ild))
    assert category_coverage(top_items, categories) == pytest.approx(np.mean(per_user_coverage))
    assert intra_list_diversity(top_items, vectors) == pytest.approx(np.mean(per_user_vector_ild))


def test_labels_to_csr_numbers_labels_in_sorted_order_and_pads_new_items():
    offsets, ids = beyond_accuracy.labels_to_csr([("pop", "rock"), (), ("jazz", "pop", "pop")], num_items=4)
    # jazz 0, pop 1, rock 2; the repeated "pop" counts once; item 3 (added later) has none
    np.testing.assert_array_equal(offsets, [0, 2, 2, 4, 4])
    np.testing.assert_array_equal(ids, [1, 2, 0, 1])
    labels = [("a", "b"), ("b", "c"), (), ("d",), ("a", "b", "c", "d"), ("e",)]  # ITEM_CATEGORIES as labels
    assert category_intra_list_diversity(TOP_ITEMS, beyond_accuracy.labels_to_csr(labels)) == pytest.approx(
        0.708333, abs=1e-6
    )
    with pytest.raises(ValueError, match="3 entries for a catalogue of 2 items"):
        beyond_accuracy.labels_to_csr([(), (), ()], num_items=2)


def test_item_popularity_counts_distinct_training_users():
    # user 0: items 1, 1 (a repeat counts once), 2; user 1: none; user 2: item 2
    offsets, items = np.array([0, 3, 3, 4]), np.array([1, 1, 2, 2])
    np.testing.assert_array_equal(beyond_accuracy.item_popularity((offsets, items), 4), [0, 1, 2, 0])
