"""The runtime: nodes call each other directly; the driver only starts calls and collects small reports."""

import pickle
import time

import pytest

from shoal.backends.base import NodeHandle
from shoal.backends.threaded import ThreadedBackend
from shoal.settings import RunConfig
from shoal.topologies.impala import ImpalaProgram, ImpalaSettings


class _Counting(NodeHandle):
    """A driver-side handle that records every call the driver makes and the bytes it sends."""

    def __init__(self, inner, name, log):
        self.inner, self.name, self.log = inner, name, log

    def call(self, method, *args, num_returns=1, **kwargs):
        self.log.append((time.monotonic(), self.name, method, len(pickle.dumps((args, kwargs)))))
        return self.inner.call(method, *args, num_returns=num_returns, **kwargs)


def instrument(backend_cls):
    """A backend class whose driver-side handles and ``get`` results are recorded.

    Handles given to nodes as arguments are the backend's own (unwrapped): what nodes call on
    each other never shows up here, only what the driver does.
    """

    class Instrumented(backend_cls):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.calls, self.results = [], []

        def spawn(self, cls, *args, name="", **kwargs):
            args = tuple(a.inner if isinstance(a, _Counting) else a for a in args)
            return _Counting(super().spawn(cls, *args, name=name, **kwargs), name or cls.__name__, self.calls)

        def get(self, futures):
            out = super().get(futures)
            self.results.append((time.monotonic(), len(pickle.dumps(out))))
            return out

    return Instrumented


def _steady_state(prog, backend, warmup_s, window_s):
    t0 = time.monotonic()
    while time.monotonic() - t0 < warmup_s:
        prog.run_iteration()
    start = time.monotonic()
    steps = 0
    while time.monotonic() - start < window_s:
        steps += prog.run_iteration().env_steps
    end = time.monotonic()
    calls = [c for c in backend.calls if start <= c[0] <= end]
    results = [r for r in backend.results if start <= r[0] <= end]
    return calls, results, end - start, steps


def _check(calls, results, seconds, steps, unroll_bytes):
    assert steps > 0
    per_node = {}
    for _, name, _, _ in calls:
        per_node[name] = per_node.get(name, 0) + 1
    for name, n in per_node.items():
        assert n / seconds <= 1.6, f"the driver called {name} {n / seconds:.1f} times per second"
    assert max(b for *_, b in calls) < 4096  # the driver sends call sizes, never data
    # nor does any trajectory or parameter buffer come back to it: reports are small
    assert max(b for _, b in results) < min(64 * 1024, unroll_bytes), max(b for _, b in results)


@pytest.mark.parametrize("topology,algo", [("impala", "impala"), ("seed", "impala"), ("a3c", "a3c"), ("ga3c", "ga3c")])
def test_threaded_driver_only_starts_calls_and_collects_reports(small_ctx, topology, algo):
    from shoal.topologies import get_topology

    backend = instrument(ThreadedBackend)()
    ctx = small_ctx(algo, steps=10**8)
    prog = get_topology(topology)(ctx, RunConfig(steps=10**8, num_actors=4), backend)
    try:
        calls, results, seconds, steps = _steady_state(prog, backend, warmup_s=4.0, window_s=6.0)
    finally:
        prog.close()
    unroll_bytes = 16 * 4 * 4 * 4 * 2  # obs of one unroll alone, twice over (obs and final obs)
    _check(calls, results, seconds, steps, unroll_bytes)


@pytest.mark.ray
def test_ray_driver_only_starts_calls_and_collects_reports(small_ctx):
    from shoal.backends.ray import RayBackend

    backend = instrument(RayBackend)()
    # Unrolls of 64 steps: one unroll's observations (8 KiB) clearly exceed any report of a second's
    # episodes, so "no result as large as one unroll" tells data from reports.
    ctx = small_ctx("impala", steps=10**8, rollout_length=64)
    prog = ImpalaProgram(ctx, RunConfig(steps=10**8, num_actors=2), backend, ImpalaSettings(unrolls_per_call=1))
    try:
        calls, results, seconds, steps = _steady_state(prog, backend, warmup_s=8.0, window_s=8.0)
    finally:
        prog.close()
    _check(calls, results, seconds, steps, 64 * 4 * 4 * 4 * 2)


class _Reader:
    """A node that reads the newest snapshot the way actors do."""

    def __init__(self, variables):
        self.variables = variables

    def read(self):
        from shoal.core import store

        version, ref = self.variables.call("get_ref", -1).result()
        snap = store.get(ref)
        return version, ref.hex() if hasattr(ref, "hex") else id(ref), bool(snap.buffer.flags.writeable)


@pytest.mark.ray
def test_a_published_version_is_stored_once_for_every_reader():
    import torch

    from shoal.backends.ray import RayBackend
    from shoal.services.variables import VariableServer

    backend = RayBackend()
    try:
        variables = backend.spawn(VariableServer, name="variables", concurrency=8)
        backend.get(variables.call("publish", {"w": torch.arange(100_000, dtype=torch.float32)}, 0))
        readers = [backend.spawn(_Reader, variables, name=f"reader-{i}") for i in range(4)]
        out = backend.get([r.call("read") for r in readers])
        assert {v for v, _, _ in out} == {0}
        assert len({ref for _, ref, _ in out}) == 1  # one object in the store, the same reference for all readers
        assert not any(w for _, _, w in out)  # read in place from shared memory (read-only), not copied
    finally:
        backend.shutdown()
