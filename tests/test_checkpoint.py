"""Checkpoints written by earlier versions restore: `tests/data/legacy_run` was trained with the
0.1.0 layout (flat modules, `model.aggregation='segment_sum'`) on the tiny test config, and holds
the recommendations that version served."""

import json
import shutil

import numpy as np
import pandas as pd

from configs import test as test_config
from graphrec_jax.checkpoint import CheckpointStore
from graphrec_jax.serving.recommender import Recommender
from graphrec_jax.training.workdir import train_and_evaluate
from tests.helpers import REPO_ROOT

LEGACY = REPO_ROOT / "tests" / "data" / "legacy_run"


def test_a_checkpoint_of_the_flat_layout_serves_the_same_recommendations(tmp_path):
    workdir = tmp_path / "legacy"
    shutil.copytree(LEGACY, workdir)
    recommender = Recommender.from_checkpoint(workdir)
    assert recommender.config.model.aggregation == "xla"  # renamed from segment_sum
    expected = pd.DataFrame(json.loads((LEGACY / "recommendations.json").read_text()))
    table = recommender.recommend(list(expected.user_id.unique()), k=5)
    assert table.item_id.tolist() == expected.item_id.tolist()
    np.testing.assert_allclose(table.score, expected.score, rtol=1e-5)


def test_a_run_of_the_flat_layout_resumes(tmp_path):
    workdir = tmp_path / "legacy"
    shutil.copytree(LEGACY, workdir)
    config = test_config.get_config()
    config.model.aggregation = "xla"
    config.train.num_epochs = 4
    config.train.eval_every_epochs = 2
    config.train.keep_checkpoints = 1
    metrics = train_and_evaluate(config, workdir)
    assert metrics["epoch"] == 4 and metrics["step"] == 24
    assert CheckpointStore(workdir, read_only=True).steps()[-1] == 24
