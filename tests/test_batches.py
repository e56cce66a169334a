import numpy as np
import pytest

from graphrec_jax.training.batches import TripleSampler, iterate_batches


def test_epoch_draws_one_valid_triple_per_interaction(tiny_interactions):
    num_users, num_items, users, items = tiny_interactions
    sampler = TripleSampler(num_users, num_items, users, items, seed=3)
    triples = sampler.sample_epoch(0, num_negatives=2)
    assert triples["users"].shape == (len(users),)
    assert triples["negatives"].shape == (len(users), 2)
    train = set(zip(users.tolist(), items.tolist(), strict=True))
    for user, positive, negatives in zip(triples["users"], triples["positives"], triples["negatives"], strict=True):
        assert (user, positive) in train
        assert all((user, negative) not in train for negative in negatives)


def test_sampling_is_deterministic_per_epoch(tiny_interactions):
    sampler = TripleSampler(*tiny_interactions, seed=3)
    first, again = sampler.sample_epoch(4), TripleSampler(*tiny_interactions, seed=3).sample_epoch(4)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    other = sampler.sample_epoch(5)
    assert not np.array_equal(first["negatives"], other["negatives"])


def test_users_uniform_over_active_users():
    users = np.repeat(np.arange(4), [1, 1, 1, 50])
    items = np.concatenate([[0], [1], [2], np.arange(50) + 3])
    sampler = TripleSampler(5, 60, users, items, seed=0)
    counts = np.bincount(np.concatenate([sampler.sample_epoch(e)["users"] for e in range(40)]), minlength=5)
    assert counts[4] == 0  # no training items: never drawn
    shares = counts[:4] / counts.sum()
    np.testing.assert_allclose(shares, 0.25, atol=0.03)


def test_batches_have_static_shape_and_mask_padding():
    triples = {
        "users": np.arange(10, dtype=np.int32),
        "positives": np.arange(10, dtype=np.int32),
        "negatives": np.arange(10, dtype=np.int32)[:, None],
    }
    batches = list(iterate_batches(triples, batch_size=4, num_devices=2))
    assert len(batches) == 3
    assert all(batch.users.shape == (2, 2) for batch in batches)
    assert batches[-1].mask.tolist() == [[True, True], [False, False]]
    assert sum(int(batch.mask.sum()) for batch in batches) == 10
    resumed = list(iterate_batches(triples, batch_size=4, num_devices=2, start_batch=2))
    np.testing.assert_array_equal(resumed[0].users, batches[2].users)
    with pytest.raises(ValueError, match="divisible"):
        next(iterate_batches(triples, batch_size=5, num_devices=2))


def test_user_with_every_item_is_rejected():
    with pytest.raises(ValueError, match="every item"):
        TripleSampler(1, 2, np.array([0, 0]), np.array([0, 1]), seed=0)


def test_negatives_come_from_the_given_pool(tiny_interactions):
    num_users, num_items, users, items = tiny_interactions
    pool = np.array([0, 1, 2, 3, 4, 5, 6, 7])  # item 8 is never a negative
    sampler = TripleSampler(num_users, num_items, users, items, seed=0, negative_items=pool)
    negatives = np.concatenate([sampler.sample_epoch(epoch, 3)["negatives"].ravel() for epoch in range(20)])
    assert set(negatives.tolist()) <= set(pool.tolist())
