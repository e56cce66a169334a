"""The loop's periodic actions: loss check, timing, progress, text refresh, evaluation, the
metrics log, checkpoints and a step limit. Each is a `loop.Hook`; `workdir.train_and_evaluate`
assembles the list a training job runs, and the benchmarks add their own to the same loop.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from graphrec_jax.training.loop import Hook, Loop


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stopped before saving the bad state."""


class LossMonitor(Hook):
    """Checks every `every_steps` steps and at each epoch's end that the losses are finite
    (raising `NonFiniteLossError` before anything saves the bad state), and notes the epoch's
    mean loss as `record["loss"]`. Reading a loss waits for its step, hence the batching."""

    def __init__(self, every_steps: int = 50, carried: list[float] | None = None):
        """`carried`: the losses of the steps a resumed run's first epoch took before it was
        stopped (saved with its checkpoint), so that epoch's mean covers all of its steps."""
        self.every_steps = max(1, every_steps)
        self.pending: list[tuple[int, jax.Array]] = []
        self.epoch_losses: list[float] = []
        self.carried = list(carried or [])

    def on_epoch_start(self, loop: Loop) -> None:
        done = loop.first_batch  # steps of this epoch taken before a resume
        self.epoch_losses = self.carried if done > 0 and len(self.carried) == done else []
        self.carried = []

    def current_epoch_losses(self) -> list[float]:
        """The losses of this epoch's steps so far (waits for their steps)."""
        self.flush()
        return list(self.epoch_losses)

    def after_step(self, loop: Loop, metrics) -> None:
        self.pending.append((loop.step, metrics["loss"]))
        if len(self.pending) * loop.steps_in_call >= self.every_steps:
            self.flush()

    def flush(self) -> None:
        for last, loss in self.pending:
            values = np.ravel(np.asarray(loss)[0])  # one loss a step (several for a block of steps)
            for step, value in enumerate(values.tolist(), start=last - len(values) + 1):
                if not np.isfinite(value):
                    raise NonFiniteLossError(
                        f"loss became {value} at step {step}; the last good checkpoint is kept. Lower "
                        "train.learning_rate (or check the data for extreme values) and train in a new --workdir; "
                        "train.init_from=THIS_WORKDIR starts it from this run's best parameters"
                    )
                self.epoch_losses.append(value)
        self.pending = []

    def on_epoch_end(self, loop: Loop) -> None:
        self.flush()
        loop.record["loss"] = float(np.mean(self.epoch_losses)) if self.epoch_losses else None


class EpochTimer(Hook):
    """Notes `record["epoch_seconds"]`: the epoch's wall time, sampling included, to the end of
    its last step."""

    def on_epoch_end(self, loop: Loop) -> None:
        jax.block_until_ready(loop.run.state.step)
        loop.record["epoch_seconds"] = time.perf_counter() - loop.epoch_started


class ProgressBar(Hook):
    """A tqdm bar over all steps with the epoch and the last checked loss, and a line per
    evaluation (process 0 only: `enabled`)."""

    def __init__(self, losses: LossMonitor, *, enabled: bool = True, cutoff: int = 20):
        self.losses, self.enabled, self.cutoff = losses, enabled, cutoff

    def on_start(self, loop: Loop) -> None:
        total = loop.num_epochs * loop.batches_per_epoch
        initial = min(loop.start_step, total)
        self.bar = tqdm(total=total, initial=initial, disable=not self.enabled, unit="batch", dynamic_ncols=True)

    def on_epoch_start(self, loop: Loop) -> None:
        self.bar.set_description(f"epoch {loop.epoch + 1}/{loop.num_epochs}")

    def after_step(self, loop: Loop, metrics) -> None:
        if not self.losses.pending and self.losses.epoch_losses:  # just checked: show it
            self.bar.set_postfix(loss=f"{self.losses.epoch_losses[-1]:.4f}", refresh=False)
        self.bar.update(loop.steps_in_call)

    def on_epoch_end(self, loop: Loop) -> None:
        if "metrics" in loop.record:
            self.bar.write(f"epoch {loop.epoch + 1} step {loop.step}: {summary(loop.record, self.cutoff)}")

    def on_end(self, loop: Loop) -> None:
        self.bar.close()


class TextRefresh(Hook):
    """With a fine-tuned text tower: re-encodes every item at each epoch's start (the items a
    step does not re-encode read these features) and before each evaluation."""

    def on_start(self, loop: Loop) -> None:
        self.refreshed_at = loop.start_step  # a fresh or restored run starts with current features

    def on_epoch_start(self, loop: Loop) -> None:
        if loop.first_batch == 0 and self.refreshed_at != loop.step:
            self.refresh(loop)

    def refresh(self, loop: Loop) -> None:
        if loop.run.finetuning is not None:
            loop.run.refresh_text_features()
            self.refreshed_at = loop.step


class Evaluation(Hook):
    """Evaluates every `every_epochs` epochs, after the last one, and when a hook before it has
    asked for it (`loop.evaluate_now`): `record["metrics"]` (`evaluate(run)`, default
    `run.evaluate`), timed as `record["eval_seconds_total"]`."""

    def __init__(self, every_epochs: int, *, text: TextRefresh | None = None, evaluate: Callable | None = None):
        self.every_epochs, self.text, self.evaluate = every_epochs, text, evaluate

    def due(self, loop: Loop) -> bool:
        finished = loop.epoch + 1
        return (self.every_epochs > 0 and finished % self.every_epochs == 0) or loop.last_epoch or loop.evaluate_now

    def on_epoch_end(self, loop: Loop) -> None:
        if not self.due(loop) or loop.end_epoch:
            return
        if self.text is not None:
            self.text.refresh(loop)
        started = time.perf_counter()
        loop.record["metrics"] = self.evaluate(loop.run) if self.evaluate else loop.run.evaluate()
        loop.record["eval_seconds_total"] = time.perf_counter() - started
        loop.last_record = record_of(loop.record)


def record_of(record: dict) -> dict:
    """The flat JSON record of an evaluated epoch: epoch, step, loss, epoch_seconds, metrics."""
    flat = {key: value for key, value in record.items() if key not in ("metrics", "eval_seconds_total")}
    return {**flat, **record.get("metrics", {})}


def summary(record: dict, cutoff: int) -> str:
    """One line of an evaluated epoch: loss, and recall / NDCG at `cutoff` of every split."""
    metrics = record.get("metrics", record)
    keys = [key for key in metrics if key.endswith((f"recall@{cutoff}", f"ndcg@{cutoff}"))]
    parts = [f"loss {record['loss']:.4f}"] if record.get("loss") is not None else []
    return ", ".join(parts + [f"{key} {metrics[key]:.4f}" for key in keys])


class MetricsLog(Hook):
    """Appends each evaluated epoch's record to `path` (`metrics.jsonl`, one JSON object a line),
    flushed and fsynced (process 0 only: `enabled`)."""

    def __init__(self, path: str | Path, *, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def on_epoch_end(self, loop: Loop) -> None:
        if self.enabled and "metrics" in loop.record:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record_of(loop.record)) + "\n")
                handle.flush()
                os.fsync(handle.fileno())


class Checkpointing(Hook):
    """Saves every `every_steps` steps (0: only with evaluations) and after each evaluation, with
    its metrics (they rank checkpoints for "best"), through `save(loop, metrics)`. A step is
    saved once: a periodic save on an evaluated epoch's last step is left to the evaluation's."""

    def __init__(self, save: Callable[[Loop, dict | None], None], *, every_steps: int, evaluation: Evaluation):
        self.save, self.every_steps, self.evaluation = save, every_steps, evaluation

    def on_start(self, loop: Loop) -> None:
        self.saved_step = loop.start_step if loop.start_step > 0 else None  # a resumed step is on disk

    def save_once(self, loop: Loop, metrics: dict | None = None) -> None:
        if self.saved_step != loop.step:
            self.save(loop, metrics)
            self.saved_step = loop.step

    def after_step(self, loop: Loop, metrics) -> None:
        # a multiple of every_steps reached in this call (a block of steps saves at its end)
        if self.every_steps and loop.step // self.every_steps > (loop.step - loop.steps_in_call) // self.every_steps:
            epoch_ends = loop.step == (loop.epoch + 1) * loop.batches_per_epoch
            if not (epoch_ends and self.evaluation.due(loop)):
                self.save_once(loop)

    def on_epoch_end(self, loop: Loop) -> None:
        if "metrics" in loop.record:
            self.save_once(loop, loop.record["metrics"])


class StepLimit(Hook):
    """Stops the loop after `num_steps` steps from where it started, keeping each step's loss in
    `losses` (reading a loss waits for its step: for tests and short runs)."""

    def __init__(self, num_steps: int):
        self.num_steps, self.losses = num_steps, []

    def after_step(self, loop: Loop, metrics) -> None:
        self.losses.extend(np.ravel(np.asarray(metrics["loss"])[0]).tolist())
        if loop.step - loop.start_step >= self.num_steps:
            loop.stop = True


class Preempted(Exception):
    """Training stopped on a preemption notice (SIGTERM) after saving a checkpoint; running the
    same job again resumes from it."""


class Preemption(Hook):
    """Saves a checkpoint at the next step boundary after a SIGTERM and stops the loop.

    In a multi-process run every process must save the same step: JAX's preemption service
    (which catches SIGTERM in each process and tells the others) picks it, and every process asks
    `reached_preemption_sync_point` at every step. A single process catches SIGTERM itself for
    the loop's duration. A notice on an epoch's last step waits for that epoch's evaluation, so
    the save carries its metrics. After the save, `on_end` raises `Preempted`."""

    def __init__(self, checkpointing: Checkpointing):
        self.checkpointing = checkpointing
        self.noticed = False
        self.stopped_at: int | None = None
        self.previous_handler = None

    def on_start(self, loop: Loop) -> None:
        self.distributed = jax.process_count() > 1
        if not self.distributed and threading.current_thread() is threading.main_thread():
            self.previous_handler = signal.signal(signal.SIGTERM, self._notice)

    def _notice(self, signum, frame) -> None:
        self.noticed = True

    def after_step(self, loop: Loop, metrics) -> None:
        if self.distributed:
            from jax.experimental import multihost_utils

            for step in range(loop.step - loop.steps_in_call + 1, loop.step + 1):  # every step id, in order
                self.noticed = multihost_utils.reached_preemption_sync_point(step) or self.noticed
        if not self.noticed:
            return
        loop.stop = True
        if loop.step != (loop.epoch + 1) * loop.batches_per_epoch:  # mid-epoch: save now
            self.save(loop)

    def on_epoch_end(self, loop: Loop) -> None:
        if self.noticed:
            self.save(loop)  # a no-op when the evaluation's save took this step

    def save(self, loop: Loop) -> None:
        self.checkpointing.save_once(loop)
        self.stopped_at = loop.step

    def on_end(self, loop: Loop) -> None:
        if self.previous_handler is not None:
            signal.signal(signal.SIGTERM, self.previous_handler)
            self.previous_handler = None
        if self.stopped_at is not None:
            raise Preempted(
                f"stopped at step {self.stopped_at} on a preemption notice (SIGTERM); the checkpoint of that "
                "step is saved: run the same command again to resume"
            )
