"""A training job in a workdir: `train_and_evaluate(config, workdir)`.

It builds the run (`run.build_run`), resumes from the workdir's latest checkpoint, and drives
the loop with the job's hooks: loss check, progress bar, text refresh, evaluation,
`metrics.jsonl` and checkpoints. Since every epoch's batches depend only on (seed, epoch), a
resumed run replays exactly what an uninterrupted run does.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from graphrec_jax import devices
from graphrec_jax.checkpoint import CheckpointStore, has_checkpoints
from graphrec_jax.config import ConfigError, config_from_json, config_to_json, validate_config
from graphrec_jax.data.types import Dataset
from graphrec_jax.files import file_in_the_way, write_atomic
from graphrec_jax.models.network import TEXT_FUSIONS
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
    or DataError before anything is written when the config or the input is invalid (also when
    the workdir holds a run with a different config, or is a file), NonFiniteLossError (leaving the last good
    checkpoint) when the loss diverges, and `hooks.Preempted` after saving on a SIGTERM.
    """
    validate_config(config)
    blocked = file_in_the_way(workdir)
    if blocked is not None:
        where = f"--workdir {workdir}" if blocked == Path(workdir) else f"--workdir {workdir}: {blocked}"
        raise ConfigError(f"{where} is a file; pass a directory")
    run = build_run(config)  # the data is read and checked here: nothing is written before
    dataset = run.setup.dataset
    best_metric = f"{validation_split_name(config, dataset)}/{config.eval.best_metric}@{config.eval.k}"
    metadata = _metadata(config, dataset, best_metric)
    workdir = Path(workdir)
    resuming = has_checkpoints(workdir)
    if resuming:
        reader = CheckpointStore(workdir, read_only=True)
        check_resumable(reader.read_metadata(reader.steps()[-1]), metadata, workdir)
        reader.close()
    elif config.train.init_from:
        state, rng = run.host_state()
        params = initial_params_from(config.train.init_from, state.params)
        run.load_state(create_train_state(params, run.optimizer), rng)

    primary = devices.is_primary_process()
    workdir.mkdir(parents=True, exist_ok=True)
    store = CheckpointStore(workdir, keep=config.train.keep_checkpoints, best_metric=best_metric)
    carried_losses: list[float] = []
    if resuming:
        abstract = {"train_state": run.host_state()[0], "rng": run.host_state()[1]}
        step, restored, arrays, restored_metadata = store.restore(abstract, None)
        carried_losses = list(restored_metadata.get("epoch_losses") or [])
        text_features = arrays.get("text_features") if run.finetuning is not None else None
        run.load_state(restored["train_state"], restored["rng"], text_features)
        log.info("resumed from %s at step %d", store.directory, step)
    start_step = run.step
    if primary:
        records = read_metrics(workdir / METRICS_FILE)
        kept = [record for record in records if record.get("step", 0) <= start_step]
        if (workdir / METRICS_FILE).exists():  # drops what was logged after the checkpoint resumed from
            write_atomic(workdir / METRICS_FILE, "".join(json.dumps(record) + "\n" for record in kept))
        write_atomic(workdir / "config.json", config_to_json(config))

    def save(loop: Loop, metrics: dict | None) -> None:
        # A save inside an epoch keeps that epoch's losses so far: a run resumed from it logs the
        # same epoch mean as one never stopped.
        partial = loop.step % loop.batches_per_epoch != 0
        epoch_metadata = dict(metadata, epoch_losses=losses.current_epoch_losses() if partial else [])
        save_checkpoint(store, loop.run, loop.step, loop.epoch + 1, epoch_metadata, metrics)

    losses = hook_types.LossMonitor(config.train.log_every_steps, carried=carried_losses)
    text = hook_types.TextRefresh()
    evaluation = hook_types.Evaluation(config.train.eval_every_epochs, text=text)
    checkpointing = hook_types.Checkpointing(
        save, every_steps=config.train.checkpoint_every_steps, evaluation=evaluation
    )
    job_hooks = [
        losses,
        hook_types.EpochTimer(),
        text,
        hook_types.ProgressBar(losses, enabled=primary and config.train.progress_bar, cutoff=config.eval.k),
        evaluation,
        hook_types.MetricsLog(workdir / METRICS_FILE, enabled=primary),
        checkpointing,
        hook_types.Preemption(checkpointing),  # last: it raises Preempted when the loop ends
    ]
    try:
        loop = train_loop(run, num_epochs=config.train.num_epochs, hooks=job_hooks)
    finally:
        store.close()
    last = loop.last_record
    if loop.step == start_step and start_step > 0:
        records = read_metrics(workdir / METRICS_FILE)
        last = records[-1] if records else {}
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
        # per item its category or tag labels, so that a restored Recommender can diversify by them
        "item_categories": (
            None if dataset.item_categories is None else [list(labels) for labels in dataset.item_categories]
        ),
        # a text model's item text, so that explanations can re-encode an item without a field
        "item_text": dataset.item_text if config.model.fusion in TEXT_FUSIONS else None,
        "config": json.loads(config_to_json(config)),
        "id_maps": {"user": dataset.user_map.to_json(), "item": dataset.item_map.to_json()},
        "dataset": {
            "name": dataset.name,
            "num_users": dataset.num_users,
            "num_items": dataset.num_items,
            "num_train": len(dataset.train),
        },
        "evaluation": {
            name: (None if split.candidate_items is None else np.asarray(split.candidate_items).tolist())
            for name, split in dataset.evaluation.items()
        },
    }


# Keys a resumed run may change: they decide how long it runs and what it reports, not what
# its steps compute.
RESUMABLE_KEYS = (
    "train.num_epochs",
    "train.eval_every_epochs",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.log_every_steps",
    "train.progress_bar",
    "train.plot_curves",
    "train.init_from",
    "sampling.prefetch_batches",
    "sampling.inference_chunk_rows",
    "eval.extra_k",
    "eval.user_chunk_size",
    "model.aggregation",
    "model.text.cache_dir",
    "model.text.encode_batch_size",
    "model.text.encode_workers",
)


def check_resumable(saved: dict, current: dict, workdir: Path) -> None:
    """Raises ConfigError naming every key whose value differs from the run saved in `workdir`,
    except those in `RESUMABLE_KEYS` (and `data.path` when the data it reads is the same size), and
    when the saved state was grown after training (`training.update`, `Recommender.save`)."""
    if saved.get("dynamic"):
        grown, data = saved.get("dataset", {}), current["dataset"]
        raise ConfigError(
            f"{workdir}'s latest checkpoint holds a dataset grown after training ({grown.get('num_users')} users, "
            f"{grown.get('num_items')} items, {grown.get('num_train')} interactions; the config's data has "
            f"{data['num_users']}, {data['num_items']}, {data['num_train']}): "
            f"scripts/train.py cannot resume it. Continue it with `python scripts/update.py --workdir {workdir} "
            "--interactions NEW.csv`, or train afresh in a new --workdir"
        )
    before = _flat(json.loads(config_to_json(config_from_json(json.dumps(saved.get("config", {}))))))
    now = _flat(current["config"])
    sizes = ("num_users", "num_items", "num_train")
    same_data = all(saved.get("dataset", {}).get(key) in (None, current["dataset"][key]) for key in sizes)
    changed = [
        key
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key) and key not in RESUMABLE_KEYS and not (key == "data.path" and same_data)
    ]
    if changed:
        differences = "; ".join(f"{key} was {before.get(key)!r}, is {now.get(key)!r}" for key in changed)
        raise ConfigError(
            f"{workdir} holds a run with another config ({differences}). Resume with the saved values "
            f"({workdir / 'config.json'}), or train afresh in a new --workdir"
        )


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_metrics(path: Path) -> list[dict]:
    """The records of a `metrics.jsonl`; a last line a kill cut short is dropped with a warning."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                warnings.warn(f"{path}: dropping its last line, cut short ({error})", RuntimeWarning, stacklevel=2)
                break
            raise ConfigError(
                f"{path}, line {number}: not a JSON record ({error}); repair or delete that line"
            ) from None
    return records
