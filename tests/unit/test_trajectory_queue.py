"""The trajectory queue: FIFO, each item once, bounded, blocking or dropping the oldest."""

import threading
import time

import numpy as np
import pytest

from shoal.errors import ConfigError
from shoal.services.queue import QueueEmpty, QueueFull, TrajectoryQueue


def unrolls(start, n, T=4):
    return {"obs": np.arange(start, start + n, dtype=np.float32)[:, None].repeat(T, 1), "id": np.arange(start, start + n)}


def test_items_come_out_once_in_order():
    q = TrajectoryQueue(8, timeout=1.0)
    q.put(unrolls(0, 3))
    q.put(unrolls(3, 2))
    np.testing.assert_array_equal(q.get(4)["id"], [0, 1, 2, 3])
    np.testing.assert_array_equal(q.get(1)["id"], [4])
    assert len(q) == 0 and q.num_put == 5 and q.num_got == 5
    with pytest.raises(QueueEmpty):
        q.get(1, timeout=0.05)


def test_a_full_blocking_queue_holds_the_producer_back():
    q = TrajectoryQueue(4, timeout=0.05)
    q.put(unrolls(0, 4))
    t0 = time.monotonic()
    with pytest.raises(QueueFull, match="stayed full"):
        q.put(unrolls(4, 1))
    assert time.monotonic() - t0 >= 0.04
    assert len(q) == 4 and q.num_dropped == 0


def test_a_blocked_producer_resumes_when_the_consumer_takes():
    q = TrajectoryQueue(2, timeout=10.0)
    q.put(unrolls(0, 2))
    done = threading.Event()

    def produce():
        q.put(unrolls(2, 2))
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    assert not done.wait(0.1)  # blocked while full
    np.testing.assert_array_equal(q.get(2)["id"], [0, 1])
    t.join(timeout=10.0)
    assert done.is_set() and not t.is_alive()
    np.testing.assert_array_equal(q.get(2)["id"], [2, 3])


def test_drop_oldest_never_blocks_and_counts_drops():
    q = TrajectoryQueue(3, overflow="drop_oldest", timeout=0.0)
    for i in range(5):
        q.put(unrolls(i, 1))
    assert q.num_dropped == 2 and len(q) == 3
    np.testing.assert_array_equal(q.get(3)["id"], [2, 3, 4])


def test_consumer_waits_for_a_batch():
    q = TrajectoryQueue(8, timeout=10.0)
    out = []
    t = threading.Thread(target=lambda: out.append(q.get(3)))
    t.start()
    for i in range(3):
        q.put(unrolls(i, 1))
    t.join(timeout=10.0)
    assert not t.is_alive()
    np.testing.assert_array_equal(out[0]["id"], [0, 1, 2])


def test_bad_overflow_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="overflow"):
        TrajectoryQueue(4, overflow="spill")


def test_close_releases_waiting_producers_and_consumers():
    full, empty = TrajectoryQueue(2, timeout=None), TrajectoryQueue(4, timeout=None)
    full.put(unrolls(0, 2))
    out = {}
    threads = [threading.Thread(target=lambda: out.__setitem__("put", full.put(unrolls(1, 1)))),
               threading.Thread(target=lambda: out.__setitem__("get", empty.get(1)))]
    for t in threads:
        t.start()
    time.sleep(0.2)
    assert not out  # both wait: no timeout while the queues are open
    full.close()
    empty.close()
    for t in threads:
        t.join(timeout=5.0)
    assert not any(t.is_alive() for t in threads)
    assert out == {"put": False, "get": None} and len(full) == 2
    assert full.put(unrolls(2, 1)) is False
