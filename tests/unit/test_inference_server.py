"""The batched inference service."""

import threading
import time

import numpy as np
import pytest

from shoal.errors import ConfigError, ShoalError
from shoal.services.inference import InferenceServer


def test_each_caller_gets_its_own_rows_back():
    server = InferenceServer(lambda obs, ids: (obs * 2, ids), max_batch=16, max_wait_s=0.01)
    try:
        futs = [server.submit(w, np.full((3, 2), w, np.float32)) for w in range(4)]
        for w, f in enumerate(futs):
            out, ids = f.result(timeout=10)
            np.testing.assert_array_equal(out, np.full((3, 2), 2 * w))
            np.testing.assert_array_equal(ids, [w] * 3)
    finally:
        server.close()


def test_eight_workers_share_batches():
    """8 env workers, each stepping after its answer arrives: calls batch several workers."""
    calls = []

    def policy(obs, ids):
        calls.append(len(obs))
        time.sleep(0.002)  # a network forward pass
        return np.zeros(len(obs), np.int64)

    server = InferenceServer(policy, max_batch=8, max_wait_s=0.005)
    errors = []

    def worker(w):
        try:
            for _ in range(40):
                server.infer(w, np.zeros((1, 4), np.float32), timeout=10)
                time.sleep(0.001)  # the env step
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    server.close()
    assert not errors and not any(t.is_alive() for t in threads)
    m = server.metrics()
    assert sum(calls) == 8 * 40 and m["inference_calls"] == len(calls)
    assert m["inference_batch_mean"] >= 4, m
    assert max(calls) <= 8


def test_a_lone_request_is_answered_after_max_wait():
    server = InferenceServer(lambda obs, ids: obs, max_batch=64, max_wait_s=0.02)
    t0 = time.monotonic()
    server.infer(0, np.zeros((1, 1)), timeout=10)
    assert 0.015 <= time.monotonic() - t0 < 5
    server.close()


def test_errors_reach_the_callers_and_closed_servers_refuse():
    def broken(obs, ids):
        raise RuntimeError("net exploded")

    server = InferenceServer(broken, max_batch=2, max_wait_s=0.0)
    with pytest.raises(RuntimeError, match="net exploded"):
        server.infer(0, np.zeros((1, 1)), timeout=10)
    server.close()
    with pytest.raises(ShoalError, match="closed"):
        server.submit(0, np.zeros((1, 1)))
    with pytest.raises(ConfigError):
        InferenceServer(broken, max_batch=0)
