"""Checkpoints: an Orbax `CheckpointManager` in `WORKDIR/checkpoints`.

Each checkpoint holds three items:
  state: the `TrainState` (params, optimizer state, step) and the base RNG key;
  arrays: what a restored model needs to serve: the training interactions (to rebuild the
    graph and to exclude seen items) and, for text models, the per-node text features;
  metadata: JSON with the config, the id maps, the epoch position and the metrics.

It keeps the latest `keep` checkpoints and the best by the validation metric, read from each
checkpoint's own metadata, so the best survives a resume and a `Recommender.save` (Orbax's own
best-N policy knows only the metrics of the steps its manager saved). Orbax
writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoints intact; a checkpoint that fails to restore
(truncated or corrupt files) is reported and the one before it is used.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

log = logging.getLogger(__name__)

CHECKPOINT_DIRECTORY = "checkpoints"


class CheckpointWarning(UserWarning):
    """A checkpoint could not be restored and an older one was used."""


class CheckpointError(RuntimeError):
    """No usable checkpoint: none in the workdir, none that restores, or one whose contents do
    not describe a model this version can serve. The message says which and what to do."""


class _RoutineOrbaxNotice(logging.Filter):
    """Drops Orbax's notices about what a read-only open implies (`Given directory is read
    only`, `setting save_interval_steps=0`): true of every restore, of no use to a user."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("read only" in message or "read_only=True" in message)


logging.getLogger("absl").addFilter(_RoutineOrbaxNotice())


def checkpoint_directory(workdir: str | Path) -> Path:
    return Path(workdir).resolve() / CHECKPOINT_DIRECTORY


def has_checkpoints(workdir: str | Path) -> bool:
    directory = checkpoint_directory(workdir)
    return directory.is_dir() and any(path.name.isdigit() for path in directory.iterdir())


class CheckpointStore:
    """Saves and restores training checkpoints under `WORKDIR/checkpoints`.

    Args:
      workdir: the run directory.
      keep: how many of the latest checkpoints to keep (the best is kept besides).
      best_metric: the metadata metrics key that ranks checkpoints (higher is better); empty:
        the one the checkpoints themselves record (their metadata's "best_metric").
      read_only: open an existing directory without creating or deleting anything.
    """

    def __init__(self, workdir: str | Path, *, keep: int = 2, best_metric: str = "", read_only: bool = False):
        self.directory = checkpoint_directory(workdir)
        self.best_metric = best_metric
        self._best = _BestRecorded()
        policies = [checkpoint_managers.LatestN(n=keep)]
        if best_metric:
            policies.append(self._best)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
            enable_async_checkpointing=False,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "arrays", "metadata"), options=options
        )
        if best_metric and not read_only:  # the metrics of the steps already on disk
            for step in self.steps():
                value = self._recorded_metric(step)
                if value is not None:
                    self._best.values[step] = value

    def _recorded_metric(self, step: int, metric: str | None = None) -> float | None:
        """Step `step`'s `metric` (default: `best_metric`) as its metadata records it; None when
        absent or unreadable (an unreadable step cannot be the best; restore skips it too)."""
        try:
            value = self.read_metadata(step).get("metrics", {}).get(metric or self.best_metric)
        except Exception:  # noqa: BLE001 - any failure to read means the step is unusable
            return None
        return None if value is None else float(value)

    def save(
        self,
        step: int,
        state: Any,
        arrays: dict[str, np.ndarray],
        metadata: dict[str, Any],
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Writes checkpoint `step`. `state` and `arrays` are pytrees of host or device arrays.

        A step already on disk is left as it is (saving a step twice is an Orbax error)."""
        if step in self.manager.all_steps():
            log.info("checkpoint %s already exists; not saving it again", self.directory / str(step))
            return
        metadata = dict(metadata, metrics=metrics or {})
        orbax_metrics = None
        if metrics and self.best_metric in metrics:
            orbax_metrics = {self.best_metric: float(metrics[self.best_metric])}
            self._best.values[step] = orbax_metrics[self.best_metric]
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                arrays=ocp.args.StandardSave(arrays),
                metadata=ocp.args.JsonSave(metadata),
            ),
            metrics=orbax_metrics,
            force=True,
        )
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        """The step with the highest best metric, or None when no checkpoint has it.

        The metric is `best_metric`, or when that is empty the one the latest checkpoint's
        metadata names (every run records which metric picks its best checkpoint)."""
        metric = self.best_metric
        steps = self.steps()
        if not metric and steps:
            try:
                metric = self.read_metadata(steps[-1]).get("best_metric", "")
            except Exception:  # noqa: BLE001 - an unreadable step (say, an empty folder) names no metric
                metric = ""
        best, best_value = None, -np.inf
        for step in steps:
            value = self._recorded_metric(step, metric) if metric else None
            if value is not None and value > best_value:
                best, best_value = step, value
        return best

    def read_metadata(self, step: int) -> dict[str, Any]:
        path = self.directory / str(step) / "metadata" / "metadata"
        if not path.is_file():  # layouts differ across Orbax versions; fall back to the API
            restored = self.manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
            return dict(restored["metadata"])
        return json.loads(path.read_text())

    def restore(
        self,
        abstract_state: Any | None,
        abstract_arrays: Any | None,
        step: int | None = None,
        *,
        first: int | None = None,
    ):
        """Restores `step`, or the latest checkpoint that restores cleanly.

        Args:
          abstract_state, abstract_arrays: `jax.eval_shape`-style trees to restore into, or
            None to get plain dicts of numpy arrays.
          step: a specific step; None tries the latest first, then older ones.
          first: with `step` None, the step to try before those (the best one, say).

        Returns:
          (step, state, arrays, metadata). Raises CheckpointError when nothing restores.
        """
        if step is not None:
            candidates = [step]
        else:
            candidates = list(reversed(self.steps()))
            if first is not None and first in candidates:
                candidates.remove(first)
                candidates.insert(0, first)
        if not candidates:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        failures = []
        for candidate in candidates:
            try:
                restored = self.manager.restore(
                    candidate,
                    args=ocp.args.Composite(
                        state=_restore_args(abstract_state),
                        arrays=_restore_args(abstract_arrays),
                        metadata=ocp.args.JsonRestore(),
                    ),
                )
                metadata = dict(restored["metadata"])
                _check_restored(candidate, restored["state"], metadata)
            except Exception as error:  # noqa: BLE001 - any failure means this checkpoint is unusable
                failures.append(f"step {candidate}: {type(error).__name__}: {str(error)[:300]}")
                if step is None:
                    warnings.warn(
                        f"checkpoint {self.directory / str(candidate)} could not be restored "
                        f"({type(error).__name__}: {str(error)[:200]}); trying the next, latest first",
                        CheckpointWarning,
                        stacklevel=2,
                    )
                continue
            return candidate, restored["state"], restored["arrays"], metadata
        raise CheckpointError(f"no checkpoint in {self.directory} could be restored: " + "; ".join(failures))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


class _BestRecorded:
    """An Orbax preservation policy that keeps the step with the highest recorded metric
    (`values`: step -> metric, filled by `CheckpointStore` from the checkpoints' metadata and
    from each save; a step without one is left to the other policies)."""

    def __init__(self):
        self.values: dict[int, float] = {}

    def should_preserve(self, checkpoints, *, context) -> list[bool]:
        del context
        known = [info.step for info in checkpoints if info.step in self.values]
        best = max(known, key=lambda step: (self.values[step], -step), default=None)  # ties: the earliest, as best_step
        return [info.step == best for info in checkpoints]


def _restore_args(abstract):
    if abstract is None:
        return ocp.args.StandardRestore()
    return ocp.args.StandardRestore(abstract)


def _check_restored(step: int, state: Any, metadata: dict) -> None:
    """Catches a checkpoint whose files restored without error but hold the wrong content."""
    recorded = metadata.get("step")
    if recorded is not None and int(recorded) != step:
        raise ValueError(f"metadata says step {recorded}, the directory says {step}")
    for leaf in jax.tree.leaves(state):
        array = np.asarray(leaf)
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ValueError("restored parameters are not finite")
