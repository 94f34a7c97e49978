"""An inference service: many env workers' observations batched into one network call.

Workers call :meth:`InferenceServer.infer` (blocking) or :meth:`~InferenceServer.submit`
(a future) with a batch of observations from their envs; a server thread gathers
requests until ``max_batch`` observations wait or the oldest request has waited
``max_wait_s``, concatenates them, runs ``fn`` once and hands each request its slice.
The same object serves SEED's and GA3C's env workers and AlphaZero's leaf evaluations;
on Ray it lives in an actor that takes concurrent calls, each blocking on its slice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

from shoal.errors import ConfigError, ShoalError

#: ``fn(obs [N, ...], worker_ids [N]) -> outputs``: every output has the leading axis N.
InferenceFn = Callable[[np.ndarray, np.ndarray], Any]


class InferenceServer:
    """Batches requests for ``fn`` from concurrent callers; thread safe.

    Args:
        fn: the batched policy call; ``worker_ids`` lets it keep per-worker state
            (exploration, recurrent state, server-side trajectories).
        max_batch: run as soon as this many observations wait.
        max_wait_s: or as soon as the oldest request has waited this long.
    """

    def __init__(self, fn: InferenceFn, max_batch: int = 64, max_wait_s: float = 0.002, name: str = "inference") -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_s < 0:
            raise ConfigError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.fn, self.max_batch, self.max_wait_s, self.name = fn, int(max_batch), float(max_wait_s), name
        self._cond = threading.Condition()
        self._pending: list[tuple[int, np.ndarray, Future, float]] = []
        self._waiting = 0
        self._closed = False
        self.batch_sizes: Counter[int] = Counter()  # observations per network call
        self.requests_per_batch: Counter[int] = Counter()
        self._thread = threading.Thread(target=self._serve, name=f"shoal-{name}", daemon=True)
        self._thread.start()

    # -- callers ------------------------------------------------------------------------------
    def submit(self, worker_id: int, obs: np.ndarray) -> Future:
        """Queue ``obs`` (``[n, ...]``, one row per env of the worker); the future holds the outputs."""
        fut: Future = Future()
        obs = np.asarray(obs)
        with self._cond:
            if self._closed:
                raise ShoalError(f"inference server {self.name!r} is closed; start a new one")
            self._pending.append((int(worker_id), obs, fut, time.monotonic()))
            self._waiting += len(obs)
            self._cond.notify_all()
        return fut

    def infer(self, worker_id: int, obs: np.ndarray, timeout: float | None = 30.0) -> Any:
        """Blocking :meth:`submit`: the outputs for ``obs``."""
        return self.submit(worker_id, obs).result(timeout=timeout)

    def metrics(self) -> dict[str, float]:
        """Mean observations and requests per network call, and the number of calls."""
        with self._cond:
            calls = sum(self.batch_sizes.values())
            if not calls:
                return {"inference_calls": 0.0, "inference_batch_mean": 0.0, "inference_requests_mean": 0.0}
            return {"inference_calls": float(calls),
                    "inference_batch_mean": sum(k * v for k, v in self.batch_sizes.items()) / calls,
                    "inference_requests_mean": sum(k * v for k, v in self.requests_per_batch.items()) / calls}

    def close(self, timeout: float = 10.0) -> None:
        """Stop the server thread; pending requests fail."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- server thread --------------------------------------------------------------------------
    def _take(self) -> list[tuple[int, np.ndarray, Future, float]] | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._pending:
                    deadline = self._pending[0][3] + self.max_wait_s
                    now = time.monotonic()
                    if self._waiting >= self.max_batch or now >= deadline:
                        break
                    self._cond.wait(deadline - now)
                else:
                    self._cond.wait()
            taken: list[tuple[int, np.ndarray, Future, float]] = []
            count = 0
            while self._pending and (not taken or count + len(self._pending[0][1]) <= self.max_batch):
                req = self._pending.pop(0)
                taken.append(req)
                count += len(req[1])
            self._waiting -= count
            return taken

    def _serve(self) -> None:
        while (batch := self._take()) is not None:
            obs = np.concatenate([r[1] for r in batch])
            ids = np.concatenate([np.full(len(r[1]), r[0], np.int64) for r in batch])
            try:
                out = self.fn(obs, ids)
            except BaseException as e:  # noqa: BLE001 - the callers get the error
                for r in batch:
                    r[2].set_exception(e)
                continue
            with self._cond:
                self.batch_sizes[len(obs)] += 1
                self.requests_per_batch[len(batch)] += 1
            start = 0
            for r in batch:
                n = len(r[1])
                r[2].set_result(_slice(out, start, start + n))
                start += n
        with self._cond:
            for r in self._pending:
                r[2].set_exception(ShoalError(f"inference server {self.name!r} closed before answering"))
            self._pending.clear()


def _slice(out: Any, a: int, b: int) -> Any:
    if isinstance(out, tuple):
        return tuple(_slice(o, a, b) for o in out)
    if isinstance(out, dict):
        return {k: _slice(v, a, b) for k, v in out.items()}
    return out[a:b]
