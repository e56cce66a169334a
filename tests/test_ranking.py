"""Top-K ranking: exclusions, candidates, chunking and item shards."""

import numpy as np
import pytest

from graphrec_jax.data.types import Interactions
from graphrec_jax.serving.ranking import csr_by_user, csr_rows, top_k_items

NUM_USERS, NUM_ITEMS = 40, 25


@pytest.fixture(scope="module")
def graph(power_law_graph):
    return power_law_graph


def test_top_k_matches_a_brute_force_ranking(graph):
    rng = np.random.default_rng(1)
    user_vectors = rng.normal(size=(NUM_USERS, 5)).astype(np.float32)
    item_vectors = rng.normal(size=(NUM_ITEMS, 5)).astype(np.float32)
    exclude = _exclusions(graph)
    users = np.arange(NUM_USERS)
    items, scores = top_k_items(user_vectors, item_vectors, users, 6, exclude=exclude, user_chunk_size=7)
    full = user_vectors @ item_vectors.T
    for user in users:
        seen = exclude[1][exclude[0][user] : exclude[0][user + 1]]
        full[user, seen] = -np.inf
        expected = np.argsort(-full[user], kind="stable")[:6]
        np.testing.assert_array_equal(items[user], expected)
        np.testing.assert_allclose(scores[user], full[user, expected], rtol=1e-5)


def test_csr_rows_takes_rows_and_pads():
    offsets, values = np.array([0, 2, 2, 5]), np.array([7, 8, 1, 2, 3])
    local, taken = csr_rows((offsets, values), np.array([2, 0, 2]), num_rows=5)
    np.testing.assert_array_equal(local, [0, 3, 5, 8, 8, 8])
    np.testing.assert_array_equal(taken, [1, 2, 3, 7, 8, 1, 2, 3])


def test_top_k_masks_training_items_and_respects_candidates():
    users = np.eye(3, 4, dtype=np.float32)
    items = np.eye(6, 4, dtype=np.float32) + 0.01 * np.arange(6, dtype=np.float32)[:, None]
    train = Interactions(np.array([0, 0]), np.array([0, 5]))
    exclude = csr_by_user(train, 3)
    top, scores = top_k_items(users, items, np.array([0, 1]), 2, exclude=exclude, user_chunk_size=1)
    assert 0 not in top[0] and 5 not in top[0]
    assert top[1, 0] == 1
    top, _ = top_k_items(users, items, np.array([0]), 2, candidate_items=np.array([2, 3]))
    assert sorted(top[0].tolist()) == [2, 3]
    top, scores = top_k_items(users, items, np.array([0]), 3, candidate_items=np.array([2, 3]))
    assert top[0, 2] == -1 and scores[0, 2] == -np.inf


def _exclusions(graph):
    users = np.asarray(graph.receivers)[np.asarray(graph.receivers) < NUM_USERS]
    items = np.asarray(graph.senders)[np.asarray(graph.receivers) < NUM_USERS] - NUM_USERS
    offsets = np.searchsorted(users, np.arange(NUM_USERS + 1)).astype(np.int64)
    return offsets, items.astype(np.int32)


@pytest.mark.parametrize("shard_size", [1, 4, 7, 25, 100])
def test_sharded_top_k_equals_unsharded(graph, shard_size):
    rng = np.random.default_rng(4)
    user_vectors = rng.normal(size=(NUM_USERS, 6)).astype(np.float32)
    item_vectors = rng.normal(size=(NUM_ITEMS, 6)).astype(np.float32)
    item_vectors[7] = item_vectors[3]  # exact ties across shards go to the lower item index
    item_vectors[20] = item_vectors[3]
    users = np.array([0, 5, 5, 39, 12, 38, 1, 2, 3])
    for exclude in (None, _exclusions(graph)):
        for candidates in (None, np.array([2, 3, 7, 11, 20, 24])):
            for k in (1, 5, 8):
                expected = top_k_items(
                    user_vectors, item_vectors, users, k, exclude=exclude, candidate_items=candidates, user_chunk_size=4
                )
                result = top_k_items(
                    user_vectors,
                    item_vectors,
                    users,
                    k,
                    exclude=exclude,
                    candidate_items=candidates,
                    user_chunk_size=4,
                    item_shard_size=shard_size,
                )
                np.testing.assert_array_equal(result[0], expected[0])
                np.testing.assert_allclose(result[1], expected[1], rtol=1e-6)
    # fewer candidates than k: the tail is -1 / -inf
    items, scores = top_k_items(
        user_vectors, item_vectors, users[:2], 8, candidate_items=np.array([1, 2]), item_shard_size=shard_size
    )
    assert (items[:, 2:] == -1).all() and np.isneginf(scores[:, 2:]).all()


def test_csr_by_user_sorts_each_users_items():
    rng = np.random.default_rng(5)
    users, items = rng.integers(0, 30, 400), rng.integers(0, 1000, 400)
    offsets, values = csr_by_user(Interactions(users, items), 32)  # users 30 and 31 have none
    order = np.lexsort((items, users))
    np.testing.assert_array_equal(offsets, np.searchsorted(users[order], np.arange(33)))
    np.testing.assert_array_equal(values, items[order])
    assert offsets.dtype == np.int64 and values.dtype == np.int32
    offsets, values = csr_by_user(Interactions(np.zeros(0), np.zeros(0)), 3)
    np.testing.assert_array_equal(offsets, [0, 0, 0, 0])
    assert values.shape == (0,)


@pytest.mark.parametrize("backend", ["xla", "auto"])
def test_top_k_chunking_does_not_change_the_lists(graph, backend):
    """Chunks are evened out (30 users in chunks of 7 -> five of 6) and the native kernel takes
    at least NATIVE_MIN_CHUNK users a call; the lists are those of one call for everyone."""
    rng = np.random.default_rng(6)
    user_vectors = rng.normal(size=(NUM_USERS, 5)).astype(np.float32)
    item_vectors = rng.normal(size=(NUM_ITEMS, 5)).astype(np.float32)
    users = rng.integers(0, NUM_USERS, 30)
    one_call = top_k_items(user_vectors, item_vectors, users, 4, exclude=_exclusions(graph), backend=backend)
    for chunk in (1, 7, 29):
        chunked = top_k_items(
            user_vectors, item_vectors, users, 4, exclude=_exclusions(graph), user_chunk_size=chunk, backend=backend
        )
        np.testing.assert_array_equal(chunked[0], one_call[0])
        # XLA's matmul may round differently for another batch shape; the native kernel may not.
        np.testing.assert_allclose(chunked[1], one_call[1], rtol=1e-6 if backend == "xla" else 0)
    nobody = top_k_items(user_vectors, item_vectors, np.zeros(0, np.int64), 4, backend=backend)
    assert nobody[0].shape == (0, 4) and nobody[1].shape == (0, 4)
