"""The host producer: order, bounded look-ahead, error propagation, clean shutdown."""

import threading
import time
import traceback

import jax
import numpy as np
import pytest

from graphrec_jax import devices
from graphrec_jax.training.batches import FullGraphBatches, TripleSampler
from graphrec_jax.training.producer import PrefetchedBatches, Prefetcher


def _wait_for(condition, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_items_arrive_in_order_and_transformed():
    assert list(Prefetcher(range(50), lambda x: x * x, size=3)) == [x * x for x in range(50)]
    assert list(Prefetcher([], size=1)) == []


def test_look_ahead_is_bounded_by_the_queue_size():
    produced = []

    def items():
        for index in range(100):
            produced.append(index)
            yield index

    prefetcher = Prefetcher(items(), size=4)
    assert next(prefetcher) == 0
    time.sleep(0.3)
    # one taken, four waiting in the queue, one held by the blocked producer
    assert len(produced) <= 1 + 4 + 1
    prefetcher.close()


def _failing_source():
    yield 1
    raise KeyError("broken row 7")


def test_producer_errors_reach_the_consumer_with_their_traceback():
    prefetcher = Prefetcher(_failing_source(), size=2)
    assert next(prefetcher) == 1
    with pytest.raises(KeyError, match="broken row 7") as caught:
        next(prefetcher)
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "_failing_source" in frames  # the frame that raised, in the producer thread
    with pytest.raises(StopIteration):
        next(prefetcher)


def test_consumer_stopping_early_stops_the_producer_and_closes_the_source():
    closed = threading.Event()

    def endless():
        try:
            index = 0
            while True:
                yield index
                index += 1
        finally:
            closed.set()

    with Prefetcher(endless(), size=2, name="test-prefetch") as prefetcher:
        assert [next(prefetcher) for _ in range(3)] == [0, 1, 2]
        thread = prefetcher._thread
    assert not thread.is_alive()
    assert closed.is_set()


def test_exception_in_the_training_loop_shuts_the_producer_down():
    source = _CountingSource()
    wrapped = PrefetchedBatches(source, size=2, transform=lambda batch: batch)

    def train():
        for batch in wrapped.epoch(0):
            if batch["index"] == 3:
                raise FloatingPointError("loss became nan")

    with pytest.raises(FloatingPointError):
        train()
    assert _wait_for(lambda: not any(t.name.startswith("prefetch-epoch") for t in threading.enumerate()))
    assert source.closed.is_set()


class _CountingSource:
    batches_per_epoch = 1000

    def __init__(self):
        self.closed = threading.Event()

    def constants(self, graph, text_features=None):
        return {"graph": graph}

    def epoch(self, epoch, start_batch=0):
        try:
            for index in range(start_batch, self.batches_per_epoch):
                yield {"index": index}
        finally:
            self.closed.set()


def test_prefetched_batches_equal_the_plain_batches_on_the_devices(tiny_interactions):
    num_users, num_items, users, items = tiny_interactions
    sampler = TripleSampler(num_users, num_items, users, items, seed=1)
    plain = FullGraphBatches(sampler, batch_size=8, num_negatives=2, num_devices=devices.num_local_devices())
    wrapped = PrefetchedBatches(plain, size=2)
    assert wrapped.batches_per_epoch == plain.batches_per_epoch
    assert wrapped.constants("graph") == {"graph": "graph"}
    expected = list(plain.epoch(2, start_batch=1))
    received = list(wrapped.epoch(2, start_batch=1))
    assert len(received) == len(expected)
    for host, placed in zip(expected, received, strict=True):
        assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(placed))
        jax.tree.map(np.testing.assert_array_equal, host, jax.tree.map(np.asarray, placed))
