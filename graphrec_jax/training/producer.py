"""The host producer: a background thread that prepares the next batches while the devices train.

`Prefetcher` runs an iterator (sampling, batching, padding) and a transform (placement on
the devices) in one thread and hands the results over through a bounded queue, so at most
`size` prepared batches wait in memory. Order is the iterator's. An exception in the thread
is re-raised in the consumer, with its original traceback; a consumer that stops early
(an exception, `close()`, leaving a `with` block, or dropping the iterator) stops the thread.

`PrefetchedBatches` wraps a batch source (`batches.FullGraphBatches`,
`sampled.SampledSubgraphBatches`) so that its epochs arrive already on the devices.

Memory: glibc gives the producer thread its own malloc arena, which fragments as batches
are made there and freed by the training loop, so the process would grow by about a third
of a batch per step. The producer therefore hands freed memory back to the system
(`malloc_trim`, a few milliseconds) every `TRIM_EVERY_ITEMS` batches, which slows the
growth about sevenfold; starting the process with `GLIBC_TUNABLES=glibc.malloc.arena_max=2` (or
`MALLOC_ARENA_MAX=2`) avoids it altogether.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_POLL_SECONDS = 0.1
TRIM_EVERY_ITEMS = 8


def _memory_trimmer():
    """glibc's `malloc_trim`, called as `trim(0)`; None where there is no glibc."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


class _Done:
    """End of the producer's iterator."""


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher(Iterator):
    """Iterates `transform(item) for item in items`, computed `size` items ahead in a thread.

    Args:
      items: any iterable; it is consumed in the producer thread only.
      transform: applied in the producer thread (for example `devices.shard`); None keeps items.
      size: how many finished items may wait (>= 1).
      name: the thread's name (shows in tracebacks and profilers).
    """

    def __init__(
        self, items: Iterable, transform: Callable[[Any], Any] | None = None, size: int = 2, *, name: str = "prefetch"
    ):
        if size < 1:
            raise ValueError(f"size={size} must be >= 1 (sampling.prefetch_batches=0 means no prefetcher)")
        self._items = items
        self._transform = transform
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    def _put(self, value) -> bool:
        """Blocks until there is room or the consumer has stopped; False when stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        iterator = iter(self._items)
        trim = _memory_trimmer()
        try:
            for count, item in enumerate(iterator, 1):
                if self._stop.is_set():
                    break
                value = item if self._transform is None else self._transform(item)
                if not self._put(value):
                    break
                if trim is not None and count % TRIM_EVERY_ITEMS == 0:
                    trim(0)
            else:
                self._put(_Done())
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(_Failed(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # run the source generator's cleanup in the thread that ran it
                close()

    def __next__(self):
        if self._finished:
            raise StopIteration
        while True:
            try:
                value = self._queue.get(timeout=_POLL_SECONDS)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self._finished = True
                    raise RuntimeError("the prefetch thread ended without a result") from None
        if isinstance(value, _Done):
            self._finished = True
            self._thread.join()
            raise StopIteration
        if isinstance(value, _Failed):
            self._finished = True
            self._thread.join()
            raise value.error
        return value

    def close(self) -> None:
        """Stops the producer and waits for it; queued items are dropped. Idempotent."""
        self._finished = True
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._finished:
            self._stop.set()


class PrefetchedBatches:
    """A batch source whose epochs are produced `size` batches ahead and placed on the devices.

    Args:
      source: the wrapped source (`batches_per_epoch`, `constants`, `epoch`).
      size: batches prepared ahead (`sampling.prefetch_batches`).
      transform: the placement, `devices.shard` by default.
    """

    def __init__(self, source, size: int, transform: Callable[[Any], Any] | None = None):
        if transform is None:
            from graphrec_jax import devices

            transform = devices.shard
        self.source = source
        self.size = size
        self.transform = transform
        self.batches_per_epoch = source.batches_per_epoch

    def constants(self, *args, **kwargs) -> dict:
        return self.source.constants(*args, **kwargs)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator:
        """The source's batches of `epoch` from `start_batch` on, already on the devices."""
        with Prefetcher(
            self.source.epoch(epoch, start_batch), self.transform, self.size, name=f"prefetch-epoch-{epoch}"
        ) as batches:
            yield from batches
