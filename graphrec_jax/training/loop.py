"""The training loop: one loop drives every run, and hooks do the rest.

`train_loop(run, num_epochs=..., hooks=[...])` runs the compiled step over the run's batches
from the step its state is at, epoch by epoch; progress bars, the loss check, evaluation,
`metrics.jsonl`, checkpoints, timing and preemption are hooks (`hooks.py`), in the manner of
CommonLoopUtils' periodic actions: the loop stays flat and calls each hook in turn.

A hook sees the `Loop` (the run, the step and epoch counters, the current epoch's `record`)
and may ask the loop to stop after the current step (`loop.stop = True`), to end the current
epoch early (`loop.end_epoch = True`, for partial-epoch timing), or to evaluate at this epoch's
end whatever the schedule (`loop.evaluate_now = True`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from graphrec_jax import devices
from graphrec_jax.training.run import TrainingRun


class Hook:
    """A periodic action of the loop. Every method is optional; they run in list order.

    on_start: once, before the first step. on_epoch_start: before an epoch's first batch (also
    when resuming mid-epoch). after_step: after each step, with the step's metrics (device
    arrays: reading them waits for the step). on_epoch_end: after an epoch's last batch.
    on_end: once, after the loop (also when a hook stopped it).
    """

    def on_start(self, loop: Loop) -> None:
        pass

    def on_epoch_start(self, loop: Loop) -> None:
        pass

    def after_step(self, loop: Loop, metrics: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, loop: Loop) -> None:
        pass

    def on_end(self, loop: Loop) -> None:
        pass


@dataclasses.dataclass
class Loop:
    """The loop's state, as hooks see it.

    Attributes:
      run: the `TrainingRun` being trained.
      num_epochs: the epoch count the loop runs to.
      start_step: the step the loop started from (> 0 when resumed).
      step: steps taken so far (host counter).
      epoch: the current epoch, 0-based.
      epoch_started: `time.perf_counter()` at the epoch's start.
      record: what hooks note about the current epoch ("epoch", "step", "loss",
        "epoch_seconds", metrics); a fresh dict every epoch.
      last_record: the record of the last epoch that was evaluated.
      stop, end_epoch, evaluate_now: requests from hooks (see the module docstring).
      steps_in_call: the steps the last compiled call took (`train.steps_per_call`; its metrics
        then hold one entry per step on their last axis).
    """

    run: TrainingRun
    num_epochs: int
    start_step: int
    step: int
    epoch: int = 0
    epoch_started: float = 0.0
    record: dict = dataclasses.field(default_factory=dict)
    last_record: dict = dataclasses.field(default_factory=dict)
    stop: bool = False
    end_epoch: bool = False
    evaluate_now: bool = False
    steps_in_call: int = 1

    @property
    def batches_per_epoch(self) -> int:
        return self.run.batches_per_epoch

    @property
    def first_batch(self) -> int:
        """The batch of the current epoch the loop (re)started at."""
        return max(self.step - self.epoch * self.batches_per_epoch, 0)

    @property
    def last_epoch(self) -> bool:
        return self.epoch + 1 == self.num_epochs


def train_loop(run: TrainingRun, *, num_epochs: int, hooks: Sequence[Hook] = ()) -> Loop:
    """Trains `run` to the end of epoch `num_epochs` (0-based epochs `step // batches ..`).

    The run's state already holds the step it is at (0, or a restored checkpoint's); epochs
    before it are skipped and the current one resumes at its next batch, drawing the same
    batches an uninterrupted run draws. Returns the `Loop` (counters, last record). Host code;
    the compiled work is `run.train_step`.
    """
    step = run.step
    loop = Loop(run=run, num_epochs=num_epochs, start_step=step, step=step)
    for hook in hooks:
        hook.on_start(loop)
    try:
        for epoch in range(step // run.batches_per_epoch, num_epochs):
            loop.epoch, loop.record, loop.end_epoch, loop.evaluate_now = epoch, {"epoch": epoch + 1}, False, False
            loop.epoch_started = time.perf_counter()
            for hook in hooks:
                hook.on_epoch_start(loop)
            for steps, metrics in _calls(run, epoch, loop.first_batch):
                loop.step += steps
                loop.steps_in_call = steps
                for hook in hooks:
                    hook.after_step(loop, metrics)
                if loop.stop or loop.end_epoch:
                    break
            if loop.stop and not _epoch_done(loop):
                break
            loop.record["step"] = loop.step
            for hook in hooks:
                hook.on_epoch_end(loop)
            if loop.stop:
                break
    finally:
        for hook in hooks:
            hook.on_end(loop)
    return loop


def _calls(run: TrainingRun, epoch: int, first_batch: int):
    """Runs the epoch's steps from `first_batch` on, one compiled call at a time; yields (steps
    taken, their metrics). With `steps_per_call > 1` a call is a block of steps on batches drawn
    on device, and each metric has a trailing axis of one entry per step."""
    if run.block_step is None:
        for batch in run.source.epoch(epoch, first_batch):
            batch = devices.shard(batch).replace(**run.constants)
            run.state, metrics = run.train_step(run.state, batch, run.rng)
            yield 1, metrics
        return
    from graphrec_jax.training.device_sampling import blocks

    for start, length in blocks(first_batch, run.batches_per_epoch, run.steps_per_call):
        run.state, metrics = run.block_step(
            run.state, run.constants, run.table, run.rng, np.int32(epoch), np.int32(start), length
        )
        yield length, metrics


def _epoch_done(loop: Loop) -> bool:
    return loop.step == (loop.epoch + 1) * loop.batches_per_epoch
