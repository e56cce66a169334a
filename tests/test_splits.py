"""Split methods: deterministic per seed, disjoint, right sizes, right interactions held out."""

from __future__ import annotations

import numpy as np
import pytest

from graphrec_jax.data import DataError, DataWarning, Interactions
from graphrec_jax.data.splits import (
    cold_item_split,
    cold_user_split,
    draw_cold_items,
    draw_cold_users,
    leave_one_out_split,
    merge_duplicates,
    ratio_split,
    split_interactions,
    temporal_split,
)


def _random_interactions(seed=0, num_users=50, num_items=80, per_user=(1, 30)) -> Interactions:
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(num_users):
        count = int(rng.integers(*per_user))
        users += [user] * count
        items += rng.choice(num_items, size=count, replace=False).tolist()
    order = rng.permutation(len(users))  # interleave users, as real files do
    users, items = np.asarray(users)[order], np.asarray(items)[order]
    timestamps = rng.integers(0, 10_000, size=len(users))
    return Interactions(users, items, rng.integers(1, 6, size=len(users)), timestamps)


def _pairs(interactions: Interactions) -> set:
    return set(zip(interactions.users.tolist(), interactions.items.tolist(), strict=True))


def _assert_partition(data: Interactions, train: Interactions, evaluation: dict) -> None:
    parts = [train] + [split.interactions for split in evaluation.values()]
    assert sum(len(part) for part in parts) == len(data)
    assert set().union(*map(_pairs, parts)) == _pairs(data)
    for index, first in enumerate(parts):
        for second in parts[index + 1 :]:
            assert not _pairs(first) & _pairs(second)


def test_ratio_split_deterministic_disjoint_and_sized():
    data = _random_interactions()
    train, evaluation = ratio_split(data, test_ratio=0.2, seed=3)
    again, evaluation_again = ratio_split(data, test_ratio=0.2, seed=3)
    other, _ = ratio_split(data, test_ratio=0.2, seed=4)
    assert _pairs(train) == _pairs(again) and _pairs(evaluation["test"].interactions) == _pairs(
        evaluation_again["test"].interactions
    )
    assert _pairs(train) != _pairs(other)
    _assert_partition(data, train, evaluation)
    assert list(evaluation) == ["test"]
    assert abs(len(evaluation["test"].interactions) / len(data) - 0.2) < 0.03
    assert set(data.users.tolist()) == set(train.users.tolist())  # every user keeps a training interaction


def test_ratio_split_per_user_counts_and_valid():
    data = _random_interactions(per_user=(1, 40))
    train, evaluation = ratio_split(data, test_ratio=0.2, valid_ratio=0.1, seed=0)
    assert list(evaluation) == ["valid", "test"]
    _assert_partition(data, train, evaluation)
    totals = np.bincount(data.users)
    tests = np.bincount(evaluation["test"].interactions.users, minlength=len(totals))
    valids = np.bincount(evaluation["valid"].interactions.users, minlength=len(totals))
    trains = np.bincount(train.users, minlength=len(totals))
    assert (trains >= 1).all()
    big = totals >= 10
    np.testing.assert_array_equal(tests[big], np.floor(0.2 * totals[big] + 0.5))
    np.testing.assert_array_equal(valids[big], np.floor(0.1 * totals[big] + 0.5))
    assert (tests[totals == 1] == 0).all()


def test_leave_one_out_holds_out_latest_by_timestamp():
    data = _random_interactions(per_user=(1, 12))
    train, evaluation = leave_one_out_split(data, valid=True)
    _assert_partition(data, train, evaluation)
    counts = np.bincount(data.users)
    for user in range(len(counts)):
        stamps = np.sort(data.timestamps[data.users == user])
        test = evaluation["test"].interactions
        valid = evaluation["valid"].interactions
        if counts[user] == 1:
            assert user not in test.users and user in train.users
            continue
        assert test.timestamps[test.users == user].tolist() == [stamps[-1]]
        if counts[user] >= 3:
            assert valid.timestamps[valid.users == user].tolist() == [stamps[-2]]
        assert train.timestamps[train.users == user].max() <= stamps[-2]


def test_leave_one_out_uses_file_order_without_timestamps():
    data = Interactions(np.array([0, 1, 0, 0, 1, 2]), np.array([5, 6, 7, 8, 9, 4]))
    train, evaluation = leave_one_out_split(data)
    assert _pairs(evaluation["test"].interactions) == {(0, 8), (1, 9)}
    assert _pairs(train) == {(0, 5), (0, 7), (1, 6), (2, 4)}


def test_temporal_split_respects_time_and_drops_unseen():
    data = _random_interactions(num_users=40, num_items=400)
    with pytest.warns(DataWarning, match=r"dropped \d+ of \d+ 'test' interactions"):
        train, evaluation = temporal_split(data, test_ratio=0.25)
    test = evaluation["test"].interactions
    assert train.timestamps.max() <= test.timestamps.min()
    assert abs(len(train) / len(data) - 0.75) < 0.01
    assert set(test.users.tolist()) <= set(train.users.tolist())
    assert set(test.items.tolist()) <= set(train.items.tolist())


def test_temporal_split_with_valid_is_ordered():
    data = _random_interactions(num_items=30, per_user=(1, 20))
    train, evaluation = temporal_split(data, test_ratio=0.2, valid_ratio=0.1)
    valid, test = evaluation["valid"].interactions, evaluation["test"].interactions
    assert train.timestamps.max() <= valid.timestamps.min() <= valid.timestamps.max() <= test.timestamps.min()


def test_temporal_split_needs_timestamps():
    data = Interactions(np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(DataError, match="needs timestamps.*data.timestamp_column"):
        temporal_split(data, test_ratio=0.2)


def test_cold_item_split_keeps_cold_items_out_of_training():
    data = _random_interactions(num_users=60, num_items=50)
    train, evaluation = split_interactions(
        data, method="cold_item", num_items=50, test_ratio=0.2, cold_item_ratio=0.2, seed=1
    )
    assert list(evaluation) == ["warm", "cold"]
    cold_items = evaluation["cold"].candidate_items
    assert len(cold_items) == 10
    assert not np.isin(train.items, cold_items).any()
    assert np.isin(evaluation["cold"].interactions.items, cold_items).all()
    warm_candidates = evaluation["warm"].candidate_items
    assert sorted(warm_candidates.tolist() + cold_items.tolist()) == list(range(50))
    assert not np.isin(evaluation["warm"].interactions.items, cold_items).any()
    _assert_partition(data, train, evaluation)  # no cold user lost: every user has warm interactions here
    other = draw_cold_items(data, cold_item_ratio=0.2, seed=2)
    assert other.tolist() != cold_items.tolist()
    assert draw_cold_items(data, cold_item_ratio=0.2, seed=1).tolist() == cold_items.tolist()


def test_cold_item_split_drops_users_without_training():
    data = Interactions(np.array([0, 0, 0, 1]), np.array([0, 1, 2, 3]))
    with pytest.warns(DataWarning, match=r"dropped 1 of 2 'cold' interactions whose user"):
        train, evaluation = cold_item_split(data, num_items=4, cold_items=np.array([2, 3]), test_ratio=0.3)
    assert _pairs(evaluation["cold"].interactions) == {(0, 2)}
    assert 1 not in train.users


def test_merge_duplicates_keeps_max_rating_and_latest_time():
    data = Interactions(
        np.array([0, 1, 0, 0, 1]),
        np.array([3, 4, 3, 5, 4]),
        np.array([2, 5, 4, 1, 3]),
        np.array([50, 10, 20, 30, 40]),
    )
    with pytest.warns(DataWarning, match=r"merged 2 duplicate rows in here: 2 \(user, item\) pairs"):
        merged, removed = merge_duplicates(data, num_items=6, source="here")
    assert removed == 2
    rows = sorted(
        zip(
            merged.users.tolist(),
            merged.items.tolist(),
            merged.ratings.tolist(),
            merged.timestamps.tolist(),
            strict=True,
        )
    )
    assert rows == [(0, 3, 4.0, 50), (0, 5, 1.0, 30), (1, 4, 5.0, 40)]
    unique = Interactions(np.array([0, 1]), np.array([1, 0]))
    assert merge_duplicates(unique, num_items=2, source="x")[1] == 0


def test_unknown_method_is_an_error():
    with pytest.raises(DataError, match="data.split.method='random' is not one of .*'cold_user'"):
        split_interactions(_random_interactions(), method="random", num_items=80, test_ratio=0.2)


def test_cold_user_split_holds_out_every_interaction_of_a_user_share():
    data = _random_interactions(num_users=60, per_user=(2, 30))
    train, evaluation = split_interactions(
        data, method="cold_user", num_items=80, test_ratio=0.2, cold_user_ratio=0.1, seed=3
    )
    assert list(evaluation) == ["test", "cold_users"]
    cold = evaluation["cold_users"]
    cold_users = np.unique(cold.interactions.users)
    assert len(cold_users) == 6 and cold.candidate_items is None
    is_cold = np.isin(data.users, cold_users)
    assert _pairs(cold.interactions) == _pairs(data.subset(is_cold))  # all their interactions, nothing else
    assert not np.isin(train.users, cold_users).any()
    assert not np.isin(evaluation["test"].interactions.users, cold_users).any()
    # The other users are split as ratio_split splits them alone.
    warm_train, warm_evaluation = ratio_split(data.subset(~is_cold), test_ratio=0.2, seed=3)
    assert _pairs(train) == _pairs(warm_train)
    assert _pairs(evaluation["test"].interactions) == _pairs(warm_evaluation["test"].interactions)
    _assert_partition(data, train, evaluation)
    again = draw_cold_users(data, cold_user_ratio=0.1, seed=3)
    assert again.tolist() == cold_users.tolist()
    assert draw_cold_users(data, cold_user_ratio=0.1, seed=4).tolist() != cold_users.tolist()


def test_cold_user_split_with_valid_and_only_present_users():
    data = Interactions(np.array([0, 0, 0, 0, 2, 2, 2, 2, 5, 5]), np.arange(10) % 4)
    cold = draw_cold_users(data, cold_user_ratio=0.34, seed=0)
    assert len(cold) == 1 and cold[0] in (0, 2, 5)  # users 1, 3, 4 have no interaction to hold out
    train, evaluation = cold_user_split(data, cold_users=np.array([5]), test_ratio=0.25, valid_ratio=0.25, seed=0)
    assert list(evaluation) == ["valid", "test", "cold_users"]
    assert evaluation["cold_users"].interactions.users.tolist() == [5, 5]
    assert len(evaluation["valid"].interactions) == 2 and len(evaluation["test"].interactions) == 2
    _assert_partition(data, train, evaluation)


@pytest.mark.parametrize("ratio", [0.01, 0.99])
def test_cold_user_ratio_must_leave_cold_and_warm_users(ratio):
    data = _random_interactions(num_users=10)
    with pytest.raises(DataError, match=rf"data\.split\.cold_user_ratio={ratio} picks \d+ of 10 users"):
        draw_cold_users(data, cold_user_ratio=ratio, seed=0)


@pytest.mark.parametrize("ratio", [0.001, 0.999])
def test_cold_item_ratio_must_leave_cold_and_warm_items(ratio):
    data = _random_interactions(num_users=10)
    items = len(np.unique(data.items))
    with pytest.raises(DataError, match=rf"cold_item_ratio={ratio} picks \d+ of {items} items; .* one warm item$"):
        draw_cold_items(data, cold_item_ratio=ratio, seed=0)
