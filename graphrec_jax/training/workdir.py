"""A training job in a workdir: `train_and_evaluate(config, workdir)`.

It builds the run (`run.build_run`), resumes from the workdir's latest checkpoint, and drives
the loop with the job's hooks: loss check, progress bar, text refresh, evaluation,
`metrics.jsonl` and checkpoints. Since every epoch's batches depend only on (seed, epoch), a
resumed run replays exactly what an uninterrupted run does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from graphrec_jax import devices
from graphrec_jax.checkpoint import CheckpointStore, has_checkpoints
from graphrec_jax.config import config_from_json, config_to_json, validate_config
from graphrec_jax.data.types import Dataset
from graphrec_jax.training import hooks as hook_types
from graphrec_jax.training.loop import Loop, train_loop
from graphrec_jax.training.run import TrainingRun, build_run, initial_params_from
from graphrec_jax.training.step import create_train_state

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def validation_split_name(config: ml_collections.ConfigDict, dataset: Dataset) -> str:
    """The split whose metric picks the best checkpoint: `eval.validation_split`, else "valid"
    when the data has one, else the first split."""
    if config.eval.validation_split:
        if config.eval.validation_split not in dataset.evaluation:
            raise ValueError(
                f"eval.validation_split={config.eval.validation_split!r} is not one of the dataset's "
                f"splits {sorted(dataset.evaluation)}"
            )
        return config.eval.validation_split
    return "valid" if "valid" in dataset.evaluation else next(iter(dataset.evaluation))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Trains, evaluates and checkpoints in `workdir`; resumes from its latest checkpoint.

    Returns the last evaluation's record (metrics with "epoch" and "step"). Raises ConfigError
    or DataError before anything is written when the config or the input is invalid, and
    NonFiniteLossError (leaving the last good checkpoint) when the loss diverges.
    """
    validate_config(config)
    run = build_run(config)
    dataset = run.setup.dataset
    best_metric = f"{validation_split_name(config, dataset)}/{config.eval.best_metric}@{config.eval.k}"
    metadata = _metadata(config, dataset, best_metric)

    workdir = Path(workdir)
    primary = devices.is_primary_process()
    workdir.mkdir(parents=True, exist_ok=True)
    store = CheckpointStore(workdir, keep=config.train.keep_checkpoints, best_metric=best_metric)
    if has_checkpoints(workdir):
        abstract = {"train_state": run.host_state()[0], "rng": run.host_state()[1]}
        step, restored, arrays, saved = store.restore(abstract, None)
        _check_same_run(saved, metadata, workdir)
        text_features = arrays.get("text_features") if run.finetuning is not None else None
        run.load_state(restored["train_state"], restored["rng"], text_features)
        log.info("resumed from %s at step %d", store.directory, step)
    elif config.train.init_from:
        state, rng = run.host_state()
        params = initial_params_from(config.train.init_from, state.params)
        run.load_state(create_train_state(params, run.optimizer), rng)
    start_step = run.step
    if primary:
        _truncate_metrics(workdir / METRICS_FILE, start_step)
        (workdir / "config.json").write_text(config_to_json(config))

    def save(loop: Loop, metrics: dict | None) -> None:
        save_checkpoint(store, loop.run, loop.step, loop.epoch + 1, metadata, metrics)

    losses = hook_types.LossMonitor(config.train.log_every_steps)
    text = hook_types.TextRefresh()
    evaluation = hook_types.Evaluation(config.train.eval_every_epochs, text=text)
    job_hooks = [
        losses,
        hook_types.EpochTimer(),
        text,
        hook_types.ProgressBar(losses, enabled=primary and config.train.progress_bar, cutoff=config.eval.k),
        evaluation,
        hook_types.MetricsLog(workdir / METRICS_FILE, enabled=primary),
        hook_types.Checkpointing(save, every_steps=config.train.checkpoint_every_steps, evaluation=evaluation),
    ]
    try:
        loop = train_loop(run, num_epochs=config.train.num_epochs, hooks=job_hooks)
    finally:
        store.close()
    last = loop.last_record
    if loop.step == start_step and start_step > 0:
        last = _last_logged(workdir / METRICS_FILE)
    if primary and config.train.plot_curves:
        from graphrec_jax.plots import plot_training_curves

        plot_training_curves(workdir / METRICS_FILE, workdir / "curves.png", k=config.eval.k)
    return last


def save_checkpoint(
    store: CheckpointStore,
    run: TrainingRun,
    step: int,
    epoch: int,
    metadata: dict,
    metrics: dict | None = None,
) -> None:
    """Writes checkpoint `step` of `run` (every process takes part; process 0 writes)."""
    state, rng = run.host_state()
    store.save(
        step,
        {"train_state": state, "rng": rng},
        run.serving_arrays(),
        dict(metadata, step=step, epoch=epoch),
        metrics=metrics,
    )


def _metadata(config, dataset: Dataset, best_metric: str) -> dict[str, Any]:
    titles = None
    if dataset.item_text is not None:
        titles = [str((text or {}).get("title", "") or "") for text in dataset.item_text]
    return {
        "best_metric": best_metric,
        "item_titles": titles,
        "config": json.loads(config_to_json(config)),
        "id_maps": {"user": dataset.user_map.to_json(), "item": dataset.item_map.to_json()},
        "dataset": {"name": dataset.name, "num_users": dataset.num_users, "num_items": dataset.num_items},
        "evaluation": {
            name: (None if split.candidate_items is None else np.asarray(split.candidate_items).tolist())
            for name, split in dataset.evaluation.items()
        },
    }


def _check_same_run(saved: dict, current: dict, workdir: Path) -> None:
    # Through config_from_json: keys added since the checkpoint was written take their defaults.
    saved_config = json.loads(config_to_json(config_from_json(json.dumps(saved.get("config", {})))))
    for section in ("data", "model"):
        if saved_config.get(section) != current["config"].get(section):
            raise ValueError(
                f"{workdir} holds checkpoints of a run with a different config.{section}; "
                "resume with the same config or use a new --workdir"
            )


def _truncate_metrics(path: Path, step: int) -> None:
    """Drops records written after the checkpoint being resumed from (a crash between
    logging and saving would otherwise log that evaluation twice)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def _last_logged(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if line]
    return json.loads(lines[-1]) if lines else {}
