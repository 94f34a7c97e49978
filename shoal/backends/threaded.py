"""In-process concurrency without Ray: a thread and a mailbox per node.

Each node lives in this process with its own thread, which takes calls from its
mailbox one at a time, so a node's state is touched by one thread only (as in a Ray
actor). Calls return futures at once; a future passed as an argument is resolved by
the callee's thread, so nodes feed each other without waiting on the caller. Actors
whose envs wait (a simulator, a socket) overlap; numpy and torch release the GIL in
their kernels, so compute overlaps too on more than one core. Results are not
deterministic: use the cooperative :class:`~shoal.backends.inprocess.InProcessBackend`
for bit-exact runs.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
import time
from typing import Any, Sequence

from shoal.backends.base import Backend, Future, NodeHandle
from shoal.errors import ShoalError

_STOP = object()


class ThreadFuture(Future):
    """A call's pending result in a node thread."""

    __slots__ = ("inner",)

    def __init__(self, inner: cf.Future) -> None:
        self.inner = inner

    def result(self, timeout: float | None = None) -> Any:
        return self.inner.result(timeout)

    def done(self) -> bool:
        return self.inner.done()


def _resolve(x: Any) -> Any:
    return x.result() if isinstance(x, Future) else x


class _NodeThread:
    """The node's thread (or, with ``concurrency > 1``, threads) and its mailbox."""

    def __init__(self, name: str, concurrency: int = 1) -> None:
        self.name = name
        self.mailbox: queue.SimpleQueue = queue.SimpleQueue()
        self.node: Any = None
        self.stopped = False
        self.threads = [threading.Thread(target=self._loop, name=f"shoal-node-{name}-{i}", daemon=True)
                        for i in range(max(1, concurrency))]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        while True:
            job = self.mailbox.get()
            if job is _STOP:
                return
            fut, fn, args, kwargs = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*(_resolve(a) for a in args), **{k: _resolve(v) for k, v in kwargs.items()}))
            except BaseException as e:  # noqa: BLE001 - the caller receives it from the future
                fut.set_exception(e)

    def submit(self, fn: Any, args: tuple, kwargs: dict) -> ThreadFuture:
        fut: cf.Future = cf.Future()
        if self.stopped:
            fut.set_exception(ShoalError(f"node {self.name!r} was stopped; start the program again"))
        else:
            self.mailbox.put((fut, fn, args, kwargs))
        return ThreadFuture(fut)

    def stop(self, timeout: float) -> None:
        """Fail the calls still waiting in the mailbox, let the running ones end (up to ``timeout`` s)."""
        self.stopped = True
        while True:
            try:
                job = self.mailbox.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                job[0].set_exception(ShoalError(f"node {self.name!r} stopped before running this call"))
        for _ in self.threads:
            self.mailbox.put(_STOP)
        for t in self.threads:
            t.join(timeout)


class ThreadedHandle(NodeHandle):
    """Posts calls to the node's mailbox."""

    def __init__(self, worker: _NodeThread, name: str) -> None:
        self._worker = worker
        self.name = name

    def call(self, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> Any:
        def run(*a: Any, **k: Any) -> Any:
            return getattr(self._worker.node, method)(*a, **k)

        fut = self._worker.submit(run, args, kwargs)
        if num_returns == 1:
            return fut
        return tuple(_Part(fut, i) for i in range(num_returns))


class _Part(Future):
    """Element ``i`` of a call that returns a tuple."""

    __slots__ = ("whole", "i", "inner")

    def __init__(self, whole: ThreadFuture, i: int) -> None:
        self.whole, self.i, self.inner = whole, i, whole.inner

    def result(self, timeout: float | None = None) -> Any:
        return self.whole.result(timeout)[self.i]


class ThreadedBackend(Backend):
    """Places every node in this process, each on its own thread."""

    name = "threaded"
    concurrent = True

    def __init__(self, call_timeout: float | None = 600.0) -> None:
        self.workers: list[_NodeThread] = []
        self.call_timeout = call_timeout

    def spawn(self, cls: type, *args: Any, name: str = "", num_cpus: float = 1, num_gpus: float = 0,
              concurrency: int = 1, max_restarts: int = 0, actor: bool = False, **kwargs: Any) -> NodeHandle:
        """``concurrency > 1``: that many threads take the node's calls (the node must be thread safe,
        as a queue or a parameter server is: a blocked call must not stop the others)."""
        worker = _NodeThread(name or cls.__name__, concurrency)

        def build(*a: Any, **k: Any) -> None:
            worker.node = cls(*a, **k)

        try:
            worker.submit(build, args, kwargs).result(self.call_timeout)  # construction errors surface here
        except BaseException:
            worker.stop(timeout=1.0)
            raise
        self.workers.append(worker)
        return ThreadedHandle(worker, name or cls.__name__)

    def get(self, futures: Future | Sequence[Future]) -> Any:
        if isinstance(futures, Future):
            return self._result(futures)
        return [self._result(f) for f in futures]

    def _result(self, f: Future) -> Any:
        try:
            return f.result(self.call_timeout) if isinstance(f, (ThreadFuture, _Part)) else f.result()
        except cf.TimeoutError:
            raise ShoalError(f"a node call took longer than {self.call_timeout} s; a node is stuck "
                             "(raise call_timeout for slow nodes)") from None

    def wait(self, futures: Sequence[Future], num_returns: int = 1,
             timeout: float | None = None) -> tuple[list[Future], list[Future]]:
        def is_ready(f: Future) -> bool:
            return not isinstance(f, (ThreadFuture, _Part)) or f.inner.done()

        deadline = None if timeout is None else time.monotonic() + timeout
        while sum(map(is_ready, futures)) < num_returns:
            pending = {f.inner for f in futures if not is_ready(f)}  # type: ignore[attr-defined]
            left = None if deadline is None else deadline - time.monotonic()
            if not pending or (left is not None and left <= 0):
                break
            cf.wait(pending, timeout=left, return_when=cf.FIRST_COMPLETED)
        return [f for f in futures if is_ready(f)], [f for f in futures if not is_ready(f)]

    def shutdown(self) -> None:
        """Stop every node's threads (failing calls not yet started), then close the nodes."""
        for w in self.workers:
            w.stop(timeout=10.0)
        for w in self.workers:
            close = getattr(w.node, "close", None)
            if callable(close):
                close()
        self.workers.clear()
