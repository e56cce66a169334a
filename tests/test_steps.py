import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from graphrec_jax import steps
from graphrec_jax.config import default_config
from graphrec_jax.graph import build_interaction_graph
from graphrec_jax.model import build_model
from tests.helpers import REPO_ROOT


def test_one_and_two_devices_give_the_same_parameters():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "pmap_equivalence.py"), "bpr", "bce", "softmax"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for loss, gaps in report.items():
        assert gaps["max_param_gap"] < 1e-5, (loss, gaps)
        assert gaps["loss_gap"] < 1e-5, (loss, gaps)


def test_unmapped_step_lowers_loss_on_a_repeated_batch(tiny_interactions):
    num_users, num_items, users, items = tiny_interactions
    config = default_config()
    config.model.embedding_dim = 8
    config.train.learning_rate = 0.05
    graph = build_interaction_graph(num_users, num_items, users, items)
    model = build_model(config.model, num_users + num_items)
    optimizer = steps.make_optimizer(config.train)
    state = steps.create_train_state(model.init(jax.random.PRNGKey(0), graph)["params"], optimizer)
    step = jax.jit(steps.make_train_step(model, optimizer, config.train, num_users=num_users, axis_name=None))
    batch = {
        "users": users[:8],
        "positives": items[:8],
        "negatives": ((items[:8] + 1) % num_items)[:, None],
        "mask": np.ones(8, bool),
        "graph": graph,
    }
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
    optimizer = steps.make_optimizer(config.train)
    params = model.init(jax.random.PRNGKey(0), graph)["params"]
    state = steps.create_train_state(params, optimizer)
    step = jax.jit(steps.make_train_step(model, optimizer, config.train, num_users=num_users, axis_name=None))
    b = 6
    batch = {
        "users": users[:b],
        "positives": items[:b],
        "negatives": np.zeros((b, 1), np.int32),
        "mask": np.array([True] * 4 + [False] * 2),
        "graph": graph,
    }
    _, metrics = step(state, batch, jax.random.PRNGKey(0))
    e = np.asarray(params["node_embedding"])
    u, p, n = e[users[:4]], e[num_users + items[:4]], e[np.full(4, num_users)]
    expected = 0.5 * (np.sum(u**2) + np.sum(p**2) + np.sum(n**2)) / 4
    assert float(metrics["l2_penalty"]) == pytest.approx(expected, rel=1e-5)
