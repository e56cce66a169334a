"""Many steps per compiled call on batches drawn on device: the draws follow the host sampler's
distribution, one and two devices agree, a resumed run replays the same batches, and the
options it cannot serve are refused."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import test as test_config
from graphrec_jax.config import ConfigError
from graphrec_jax.training.device_sampling import PositiveTable, blocks, sample_global_batch
from graphrec_jax.training.workdir import train_and_evaluate
from tests.helpers import REPO_ROOT


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    users = np.concatenate([np.full(30, 0), np.repeat(np.arange(1, 40), 3)])  # user 0 holds 30 of 40 items
    items = np.concatenate([np.arange(30), rng.integers(0, 40, 117)])
    pairs = np.unique(np.stack([users, items], 1), axis=0)
    table = PositiveTable.build(45, pairs[:, 0], pairs[:, 1], np.arange(40))  # users 40..44 have no items
    return table, pairs


def test_draws_follow_the_host_samplers_distribution(table):
    table, pairs = table
    table = jax.tree.map(jax.numpy.asarray, table)
    sample = jax.jit(lambda key: sample_global_batch(table, key, 4096, 3, 4000))
    users, positives, negatives, mask = (np.asarray(part) for part in sample(jax.random.PRNGKey(1)))
    assert not mask[4000:].any()
    # a row is masked only when 17 draws all hit the user's items: user 0 holds 3/4 of them, so
    # about 1 in 130 negatives; every other user holds at most 3 of 40
    assert set(users[:4000][~mask[:4000]].tolist()) <= {0} and (~mask[:4000]).mean() < 0.01
    held = {(int(u), int(i)) for u, i in pairs}
    assert all((u, p) in held for u, p in zip(users, positives, strict=True))
    kept = mask & (np.arange(4096) < 4000)
    assert not any((u, n) in held for u, row in zip(users[kept], negatives[kept], strict=True) for n in row)
    assert set(users.tolist()) <= set(range(40))  # only users with items
    counts = np.bincount(users, minlength=40)
    assert counts.min() > 60 and counts.max() < 150  # uniform over 40 users: about 102 each
    # user 0's negatives come from the 10 items it lacks, each about equally
    lacking = np.bincount(negatives[kept & (users == 0)].ravel(), minlength=40)
    assert set(np.flatnonzero(lacking)) <= set(range(30, 40)) and lacking[30:].min() > 0


def test_redraws_stop_early_with_the_draws_of_every_round(table):
    """The redraw loop ends at the first round with no clash; all rounds, run to the end as a
    fixed count, give the same negatives and mask (later rounds change nothing)."""
    from graphrec_jax.training.device_sampling import REDRAW_ROUNDS, _holds

    table, _ = table
    table = jax.tree.map(jax.numpy.asarray, table)
    key = jax.random.PRNGKey(3)
    users, positives, negatives, mask = sample_global_batch(table, key, 512, 4, 500)
    _, _, negative_key = jax.random.split(key, 3)

    def draw(k):
        return table.pool[jax.random.randint(k, (512, 4), 0, table.pool.shape[0])]

    every_round = draw(negative_key)
    for round_index in range(REDRAW_ROUNDS):
        clash = _holds(table, users[:, None], every_round)
        every_round = np.where(clash, draw(jax.random.fold_in(negative_key, round_index + 1)), every_round)
    clean = ~np.asarray(_holds(table, users[:, None], every_round)).any(axis=1)
    np.testing.assert_array_equal(negatives, every_round)
    np.testing.assert_array_equal(mask, (np.arange(512) < 500) & clean)
    assert np.asarray(_holds(table, users[:, None], draw(negative_key))).any()  # there were redraws


def test_blocks_cover_an_epoch_from_any_batch():
    assert blocks(0, 10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert blocks(3, 10, 4) == [(3, 4), (7, 3)]
    assert blocks(0, 3, 8) == [(0, 3)]


def test_one_and_two_devices_agree_with_blocks_of_steps(tmp_path):
    for count in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}", PYTHONPATH=str(REPO_ROOT))
        command = [sys.executable, str(REPO_ROOT / "tests" / "workers" / "pmap_equivalence.py")]
        result = subprocess.run(
            [*command, str(tmp_path / f"d{count}"), "bpr", "--steps-per-call", "3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = np.load(tmp_path / "d1_bpr.npz"), np.load(tmp_path / "d2_bpr.npz")
    assert len(one["losses"]) == 6 and np.all(np.isfinite(one["losses"]))
    for key in set(one.files) - {"devices"}:
        assert np.max(np.abs(one[key] - two[key])) < 1e-5, key


def _config(epochs):
    config = test_config.get_config()
    config.train.steps_per_call = 4
    config.train.num_epochs = epochs
    config.train.eval_every_epochs = 2
    return config


def test_a_resumed_run_replays_the_same_batches(tmp_path):
    straight = train_and_evaluate(_config(6), tmp_path / "straight")
    train_and_evaluate(_config(3), tmp_path / "resumed")
    resumed = train_and_evaluate(_config(6), tmp_path / "resumed")
    timing = ("epoch_seconds", "eval_seconds")
    assert {k: v for k, v in resumed.items() if not k.endswith(timing)} == {
        k: v for k, v in straight.items() if not k.endswith(timing)
    }
    assert straight["test/recall@10"] > 0.35  # it learns (random is about 0.3)


def test_options_it_cannot_serve_are_refused(tmp_path):
    config = _config(2)
    config.sampling.mode = "sampled"
    config.sampling.fanouts = "4,3"
    with pytest.raises(ConfigError, match="train.steps_per_call=4 draws batches on device"):
        train_and_evaluate(config, tmp_path)
    assert not tmp_path.joinpath("checkpoints").exists()
