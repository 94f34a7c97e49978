"""Rate limiter admission at the stated ratio, blocking with timeouts, and queues."""

import threading
import time

import numpy as np
import pytest

from shoal.data import RateLimited, RateLimiter, ReplayTable, Uniform
from shoal.errors import ConfigError


def one(v=0.0):
    return {"x": np.array([v], np.float32)}


def test_admission_follows_the_band():
    rl = RateLimiter(samples_per_insert=2.0, min_size_to_sample=3, error_buffer=3.0)  # band [3, 9]
    assert (rl.min_diff, rl.max_diff) == (3.0, 9.0)
    assert not rl.can_sample(1, size=0)
    for size in range(3):
        assert rl.can_insert(1, size)  # below min size inserts are always admitted
        rl.record_insert(1)
    assert rl.diff == 6
    allowed = 0
    while rl.can_sample(1, size=3):
        rl.record_sample(1)
        allowed += 1
    assert allowed == 3 and rl.diff == 3  # sampling stops at the band's floor
    inserts = 0
    while rl.can_insert(1, size=3):
        rl.record_insert(1)
        inserts += 1
    assert inserts == 3 and rl.diff == 9  # inserting stops at the band's ceiling


def test_long_run_ratio_is_samples_per_insert():
    table = ReplayTable(100, Uniform(), rate_limiter=RateLimiter.ratio(4.0, 10, 8.0))
    samples = 0
    for i in range(500):
        if table.can_insert(1):
            table.insert(one(i))
        while table.can_sample(1):
            table.sample(1)
            samples += 1
    inserts = table.rate_limiter.inserts
    assert abs(samples - 4 * inserts) <= 4 * 10 + 8  # off by at most the band and the warm-up


def test_nonblocking_sample_raises_or_returns_none():
    table = ReplayTable(10, rate_limiter=RateLimiter.min_size(3))
    table.insert({"x": np.zeros(2, np.float32)})
    assert not table.can_sample(1)
    assert table.try_sample(1) is None
    with pytest.raises(RateLimited, match="refused to sample"):
        table.sample(1)
    t0 = time.perf_counter()
    with pytest.raises(RateLimited, match="within 0.05 s"):
        table.sample(1, timeout=0.05)
    assert time.perf_counter() - t0 < 2.0
    table.insert(one(1.0))
    sampled = table.try_sample(2)  # 3 items now meet min_size 3: a batch of 2 (items, keys, weights)
    assert sampled is not None and len(sampled[0]["x"]) == 2 and len(sampled[1]) == 2


def test_blocked_sample_wakes_up_when_an_insert_allows_it():
    table = ReplayTable(10, rate_limiter=RateLimiter.ratio(1.0, 2, 2.0), timeout=None)
    table.insert(one())
    result = {}

    def learner():
        result["sample"] = table.sample(1, timeout=5.0)

    thread = threading.Thread(target=learner)
    thread.start()
    time.sleep(0.1)
    assert thread.is_alive()  # still waiting: one item is below min_size_to_sample
    table.insert(one(1.0))
    thread.join(timeout=5.0)
    assert not thread.is_alive() and "sample" in result


def test_blocked_insert_wakes_up_when_a_sample_allows_it():
    table = ReplayTable.queue(2, timeout=5.0)
    table.insert({"x": np.zeros(2, np.float32)})
    assert not table.can_insert(1)
    done = threading.Event()

    def actor():
        table.insert(one(7.0))
        done.set()

    thread = threading.Thread(target=actor)
    thread.start()
    assert not done.wait(0.1)  # blocked: the queue is full
    table.sample(1)
    assert done.wait(5.0)
    thread.join(timeout=5.0)
    np.testing.assert_array_equal(table.sample(2)[0]["x"], [0.0, 7.0])


def test_band_too_narrow_is_a_config_error():
    with pytest.raises(ConfigError, match="widen error_buffer"):
        RateLimiter(samples_per_insert=4.0, min_size_to_sample=10, error_buffer=2.0)
    with pytest.raises(ConfigError, match="min_size_to_sample"):
        RateLimiter(min_size_to_sample=0)


def test_insert_batches_are_admitted_whole_unless_they_never_fit():
    rl = RateLimiter(samples_per_insert=1.0, min_size_to_sample=1, error_buffer=(0.0, 10.0))
    rl.record_insert(7)
    assert rl.can_insert(3, size=7) and not rl.can_insert(4, size=7)  # 7 + 4 > 10
    assert rl.can_insert(12, size=7)  # wider than the band: admitted when its first item fits
    rl.record_insert(3)
    assert not rl.can_insert(12, size=10)


def test_queue_never_overflows_with_batches_smaller_than_it():
    table = ReplayTable.queue(5)
    table.insert({"x": np.arange(3, dtype=np.float32)})
    assert not table.can_insert(3)
    with pytest.raises(RateLimited):
        table.insert({"x": np.arange(3, 6, dtype=np.float32)})
    assert table.num_evicted == 0
    table.sample(1)
    table.insert({"x": np.arange(3, 6, dtype=np.float32)})
    np.testing.assert_array_equal(table.sample(5)[0]["x"], [1, 2, 3, 4, 5])
