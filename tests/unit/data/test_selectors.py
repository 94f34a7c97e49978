"""Sampling order of each selector, and uniform sampling over a changing set of items."""

import numpy as np
import pytest

from shoal.data import Fifo, Lifo, MaxHeap, MinHeap, RateLimiter, ReplayTable, Uniform
from shoal.errors import ShoalError


def items(values):
    return {"x": np.asarray(values, dtype=np.float32)}


def test_fifo_returns_oldest_first_and_queue_removes_them():
    table = ReplayTable.queue(10)
    table.insert(items([0, 1, 2, 3, 4]))
    got, keys, probs = table.sample(2)
    np.testing.assert_array_equal(got["x"], [0, 1])
    np.testing.assert_array_equal(probs, [1, 1])
    table.insert(items([5]))
    np.testing.assert_array_equal(table.sample(3)[0]["x"], [2, 3, 4])
    np.testing.assert_array_equal(table.sample(1)[0]["x"], [5])
    assert len(table) == 0


def test_fifo_without_removal_keeps_returning_the_oldest():
    table = ReplayTable(5, Fifo())
    table.insert(items([0, 1, 2]))
    np.testing.assert_array_equal(table.sample(2)[0]["x"], [0, 1])
    np.testing.assert_array_equal(table.sample(2)[0]["x"], [0, 1])
    table.insert(items([3, 4, 5]))  # evicts 0
    np.testing.assert_array_equal(table.sample(2)[0]["x"], [1, 2])


def test_lifo_stack_returns_newest_first():
    table = ReplayTable(6, Lifo(), max_times_sampled=1)
    table.insert(items([0, 1, 2, 3, 4]))
    np.testing.assert_array_equal(table.sample(2)[0]["x"], [4, 3])
    keys = table.insert(items([5, 6]))
    np.testing.assert_array_equal(table.sample(3)[0]["x"], [6, 5, 2])
    np.testing.assert_array_equal(table.sample(2)[0]["x"], [1, 0])
    later = table.insert(items([7]))
    assert later[0] > keys[-1]  # keys keep growing even when slots are reused out of order


def test_max_heap_and_min_heap_follow_priorities_with_ties_to_the_oldest():
    p = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    top = ReplayTable(8, MaxHeap())
    keys = top.insert(items([0, 1, 2, 3, 4]), priorities=p)
    np.testing.assert_array_equal(top.sample(3)[0]["x"], [4, 2, 0])
    bottom = ReplayTable(8, MinHeap())
    bottom.insert(items([0, 1, 2, 3, 4]), priorities=p)
    np.testing.assert_array_equal(bottom.sample(3)[0]["x"], [1, 3, 0])
    top.update_priorities(keys[[0, 4]], np.array([9.0, 0.0]))
    np.testing.assert_array_equal(top.sample(5)[0]["x"], [0, 2, 1, 3, 4])
    bottom.update_priorities(keys[[1]], np.array([10.0]))
    np.testing.assert_array_equal(bottom.sample(5)[0]["x"], [3, 0, 2, 4, 1])


def test_heap_skips_evicted_items_and_refuses_more_than_it_holds():
    table = ReplayTable(3, MaxHeap())
    table.insert(items([0, 1, 2]), priorities=np.array([9.0, 8.0, 1.0]))
    table.insert(items([3]), priorities=np.array([0.5]))  # evicts item 0, the best
    np.testing.assert_array_equal(table.sample(3)[0]["x"], [1, 2, 3])
    assert not table.can_sample(4)
    with pytest.raises(ShoalError):
        table.sample(4)


def test_uniform_frequencies_are_flat():
    table = ReplayTable(16, Uniform(seed=3))
    table.insert(items(np.arange(4)))
    got, _, probs = table.sample(40000)
    np.testing.assert_allclose(probs, 0.25)
    freq = np.bincount(got["x"].astype(int), minlength=4) / 40000
    np.testing.assert_allclose(freq, 0.25, atol=0.01)


def test_uniform_only_samples_live_items_under_random_removals():
    rng = np.random.default_rng(0)
    table = ReplayTable(20, Uniform(seed=1), rate_limiter=RateLimiter.min_size(1), max_times_sampled=2)
    next_value = 0
    for _ in range(300):
        k = int(rng.integers(1, 6))
        table.insert(items(np.arange(next_value, next_value + k)))
        next_value += k
        if len(table):
            table.sample(int(rng.integers(1, 4)))
        live = table.index.live_slots()
        dense = table.selector.dense[:table.selector.count]
        assert sorted(dense.tolist()) == sorted(live.tolist())
        assert (table.selector.where[dense] == np.arange(len(dense))).all()
