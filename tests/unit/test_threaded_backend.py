"""The threaded in-process backend: a thread and a mailbox per node."""

import threading
import time

import pytest

from shoal.backends.threaded import ThreadedBackend


class Counter:
    def __init__(self, start):
        self.value = start
        self.threads = set()

    def add(self, x):
        self.threads.add(threading.get_ident())
        self.value += x
        return self.value

    def slow(self, seconds):
        time.sleep(seconds)
        return seconds

    def pair(self):
        return self.value, -self.value

    def fail(self):
        raise ValueError("boom")


class Forwarder:
    """A node holding a handle to another node and calling it directly."""

    def __init__(self, target):
        self.target = target

    def push(self, x):
        return self.target.call("add", x).result(10)


def test_calls_run_in_order_on_the_node_thread():
    b = ThreadedBackend()
    try:
        h = b.spawn(Counter, 0)
        futs = [h.call("add", 1) for _ in range(50)]
        assert b.get(futs) == list(range(1, 51))
        node = b.workers[0].node
        assert len(node.threads) == 1 and threading.get_ident() not in node.threads
        a, neg = h.call("pair", num_returns=2)
        assert b.get([a, neg]) == [50, -50]
    finally:
        b.shutdown()


def test_nodes_overlap_while_they_wait():
    b = ThreadedBackend()
    try:
        handles = [b.spawn(Counter, 0) for _ in range(8)]
        t0 = time.monotonic()
        assert b.get([h.call("slow", 0.2) for h in handles]) == [0.2] * 8
        assert time.monotonic() - t0 < 0.2 * 8 / 2  # concurrent, not one after the other
    finally:
        b.shutdown()


def test_wait_returns_what_is_ready_and_honours_the_timeout():
    b = ThreadedBackend()
    try:
        fast, slow = b.spawn(Counter, 0), b.spawn(Counter, 0)
        f1, f2 = fast.call("slow", 0.0), slow.call("slow", 1.0)
        t0 = time.monotonic()
        ready, rest = b.wait([f2, f1], num_returns=1, timeout=5.0)
        assert ready == [f1] and rest == [f2] and time.monotonic() - t0 < 0.9
        ready, rest = b.wait([f2], num_returns=1, timeout=0.05)
        assert ready == [] and rest == [f2]
    finally:
        b.shutdown()


def test_futures_and_handles_pass_between_nodes():
    b = ThreadedBackend()
    try:
        counter = b.spawn(Counter, 10)
        fwd = b.spawn(Forwarder, counter)
        assert b.get(fwd.call("push", 5)) == 15
        # a future as an argument is resolved by the callee's thread
        assert b.get(counter.call("add", counter.call("slow", 1))) == 16
    finally:
        b.shutdown()


def test_errors_reach_the_caller():
    b = ThreadedBackend()
    try:
        h = b.spawn(Counter, 0)
        with pytest.raises(ValueError, match="boom"):
            b.get(h.call("fail"))
        assert b.get(h.call("add", 1)) == 1  # the node survives its call's error
        with pytest.raises(TypeError):
            b.spawn(Counter)  # a constructor error surfaces at spawn
    finally:
        b.shutdown()


class Gate:
    """A thread-safe node whose calls block each other unless served concurrently."""

    def __init__(self):
        self.event = threading.Event()

    def wait(self):
        return self.event.wait(10.0)

    def open(self):
        self.event.set()
        return True


def test_a_concurrent_node_serves_while_a_call_blocks():
    b = ThreadedBackend()
    try:
        gate = b.spawn(Gate, concurrency=2)
        blocked = gate.call("wait")
        assert b.get(gate.call("open")) is True  # served while the first call still blocks
        assert b.get(blocked) is True
    finally:
        b.shutdown()


def test_stopped_nodes_fail_waiting_and_later_calls_instead_of_hanging():
    from shoal.errors import ShoalError

    b = ThreadedBackend()
    h = b.spawn(Counter, 0)
    busy = h.call("slow", 0.3)
    deadline = time.monotonic() + 5
    while not busy.inner.running() and time.monotonic() < deadline:
        time.sleep(0.005)
    waiting = h.call("add", 1)  # queued behind the running slow call
    worker = b.workers[0]
    b.shutdown()
    assert b.get(busy) == 0.3  # the running call ended
    with pytest.raises(ShoalError, match="stopped"):
        b.get(waiting)
    with pytest.raises(ShoalError, match="stopped"):
        b.get(h.call("add", 1))
    assert not any(t.is_alive() for t in worker.threads)


def test_a_failed_constructor_leaves_no_thread_behind():
    before = threading.active_count()
    b = ThreadedBackend()
    with pytest.raises(TypeError):
        b.spawn(Counter)
    time.sleep(0.2)
    assert threading.active_count() == before
