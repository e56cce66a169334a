import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from graphrec_jax.config import default_config
from graphrec_jax.graph.build import build_interaction_graph
from graphrec_jax.models.setup import build_model
from graphrec_jax.optimizers import make_optimizer
from graphrec_jax.training.batches import Batch
from graphrec_jax.training.step import create_train_state, make_train_step
from tests.helpers import REPO_ROOT


def test_one_and_two_devices_give_the_same_parameters(tmp_path):
    losses = ("bpr", "bce", "softmax")
    for count in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}", PYTHONPATH=str(REPO_ROOT))
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "tests" / "workers" / "pmap_equivalence.py"), str(tmp_path / f"d{count}")]
            + list(losses),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    for loss in losses:
        one, two = np.load(tmp_path / f"d1_{loss}.npz"), np.load(tmp_path / f"d2_{loss}.npz")
        assert int(one["devices"]) == 1 and int(two["devices"]) == 2
        assert len(one["losses"]) == 6
        for key in set(one.files) - {"devices"}:
            assert np.max(np.abs(one[key] - two[key])) < 1e-5, (loss, key)


def test_unmapped_step_lowers_loss_on_a_repeated_batch(tiny_interactions):
    num_users, num_items, users, items = tiny_interactions
    config = default_config()
    config.model.embedding_dim = 8
    config.train.learning_rate = 0.05
    graph = build_interaction_graph(num_users, num_items, users, items)
    model = build_model(config.model, num_users + num_items)
    optimizer = make_optimizer(config.train.learning_rate)
    state = create_train_state(model.init(jax.random.PRNGKey(0), graph)["params"], optimizer)
    step = jax.jit(make_train_step(model, optimizer, loss="bpr", l2_weight=1e-4, num_users=num_users, axis_name=None))
    batch = Batch(
        users=users[:8],
        positives=items[:8],
        negatives=((items[:8] + 1) % num_items)[:, None],
        mask=np.ones(8, bool),
        graph=graph,
    )
    # the negatives may collide with positives of the same user; the loss still has to fall
    losses = []
    for _ in range(20):
        state, metrics = step(state, batch, jax.random.PRNGKey(0))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 20


def test_l2_term_matches_lightgcn_formula(tiny_interactions):
    num_users, num_items, users, items = tiny_interactions
    config = default_config()
    config.model.embedding_dim = 4
    config.train.l2_weight = 1e-4
    graph = build_interaction_graph(num_users, num_items, users, items)
    model = build_model(config.model, num_users + num_items)
    optimizer = make_optimizer(config.train.learning_rate)
    params = model.init(jax.random.PRNGKey(0), graph)["params"]
    state = create_train_state(params, optimizer)
    step = jax.jit(make_train_step(model, optimizer, loss="bpr", l2_weight=1e-4, num_users=num_users, axis_name=None))
    b = 6
    batch = Batch(
        users=users[:b],
        positives=items[:b],
        negatives=np.zeros((b, 1), np.int32),
        mask=np.array([True] * 4 + [False] * 2),
        graph=graph,
    )
    _, metrics = step(state, batch, jax.random.PRNGKey(0))
    e = np.asarray(params["node_embedding"])
    u, p, n = e[users[:4]], e[num_users + items[:4]], e[np.full(4, num_users)]
    expected = 0.5 * (np.sum(u**2) + np.sum(p**2) + np.sum(n**2)) / 4
    assert float(metrics["l2_penalty"]) == pytest.approx(expected, rel=1e-5)
