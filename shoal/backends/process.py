"""A node in a process of its own, without Ray: a spawned child serving calls over a pipe.

What a learner group runs its ranks in when the run's backend keeps nodes in this process
(``inprocess``, ``threaded``): each rank needs its own process for its own process group and
its own torch threads. Calls are served one at a time, in the order they were made; the
handle returns futures like any backend's, and arguments that are futures are resolved here
first (their values travel through the pipe).
"""

from __future__ import annotations

import itertools
import os
import pickle
import subprocess
import sys
import threading
import traceback
from concurrent.futures import Future as _ConcurrentFuture
from multiprocessing.connection import Connection
from typing import Any

from shoal.backends.base import Future, NodeHandle
from shoal.errors import ShoalError

_STOP = "__stop__"


class ProcessFuture(Future):
    """The pending result of a call to a :class:`ProcessHandle`."""

    __slots__ = ("_future",)

    def __init__(self, future: _ConcurrentFuture) -> None:
        self._future = future

    def result(self) -> Any:
        return self._future.result()

    def done(self) -> bool:
        """Whether the call has finished (result or error)."""
        return self._future.done()


def _send(conn: Connection, obj: Any) -> None:
    # Plain pickle, not multiprocessing's: that one would share tensors through handles only processes
    # started by multiprocessing may open; here every tensor travels by value.
    conn.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _recv(conn: Connection) -> Any:
    # Only ever a pipe between the driver and a learner process it spawned itself (as multiprocessing and
    # Ray move call arguments): never a file, a socket or anything a user is sent. Checkpoints are
    # safetensors + JSON and never go through here.
    return pickle.loads(conn.recv_bytes())


def _resolve(x: Any) -> Any:
    return x.result() if isinstance(x, Future) else x


def _serve(requests: Connection, replies: Connection, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The child's loop: build the node, then answer ``(id, method, args, kwargs)`` requests until told to stop.

    A node that failed to build answers every call with its constructor's error (so the caller sees why).
    """
    node: Any = None
    failed: BaseException | None = None
    try:
        node = cls(*args, **kwargs)
        _send(replies, (0, True, None))
    except BaseException as e:  # the parent re-raises it for the caller
        failed = _portable(e)
        _send(replies, (0, False, failed))
    while True:
        try:
            call_id, method, cargs, ckwargs = _recv(requests)
        except (EOFError, OSError):
            break  # the parent went away
        if failed is not None and method != _STOP:
            _send(replies, (call_id, False, failed))
            continue
        if method == _STOP:
            close = getattr(node, "close", None) if node is not None else None
            if callable(close):
                try:
                    close()
                except Exception:
                    pass
            _send(replies, (call_id, True, None))
            break
        try:
            out = getattr(node, method)(*cargs, **ckwargs)
            _send(replies, (call_id, True, out))
        except BaseException as e:
            _send(replies, (call_id, False, _portable(e)))
    replies.close()


def _portable(e: BaseException) -> BaseException:
    """``e`` itself when it survives pickling, else a ShoalError carrying its text and traceback."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        return ShoalError(f"{type(e).__name__}: {e}\n{tb}")


class ProcessHandle(NodeHandle):
    """A node in a spawned child process; ``call`` returns a :class:`ProcessFuture`."""

    def __init__(self, cls: type, *args: Any, name: str = "", start_timeout_s: float = 300.0, **kwargs: Any) -> None:
        self.name = name or cls.__name__
        # A fresh interpreter running this module, not multiprocessing's spawn: that would re-run the
        # user's main script in the child (and fail in a script without an ``if __name__ == "__main__"`` guard).
        # Requests and replies travel through two pipes of this node's own.
        from_parent, to_child = os.pipe()  # (read end, write end)
        from_child, to_parent = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)}
        self.process = subprocess.Popen([sys.executable, "-m", "shoal.backends.process", str(from_parent), str(to_parent)],
                                        env=env, pass_fds=(from_parent, to_parent))
        os.close(from_parent)
        os.close(to_parent)
        self._send = Connection(to_child, readable=False)
        self._recv = Connection(from_child, writable=False)
        self._ids = itertools.count(1)
        self._pending: dict[int, _ConcurrentFuture] = {}
        self._lock = threading.Lock()
        self._closed = False
        started: _ConcurrentFuture = _ConcurrentFuture()
        self._pending[0] = started
        _send(self._send, (cls, tuple(_resolve(a) for a in args), {k: _resolve(v) for k, v in kwargs.items()}))
        self._reader = threading.Thread(target=self._read, name=f"shoal-{self.name}-replies", daemon=True)
        self._reader.start()
        self._started = ProcessFuture(started)
        self._start_timeout_s = start_timeout_s

    def wait_started(self) -> None:
        """Block until the node is built in its process (re-raising what its constructor raised)."""
        self._started._future.result(timeout=self._start_timeout_s)

    def _read(self) -> None:
        error: BaseException | None = None
        while True:
            try:
                call_id, ok, value = _recv(self._recv)
            except (EOFError, OSError):
                break
            except Exception as e:  # a reply that cannot be read: fail every pending call with it
                error = e
                break
            with self._lock:
                fut = self._pending.pop(call_id, None)
            if fut is not None:
                fut.set_result(value) if ok else fut.set_exception(value)
        with self._lock:  # the child is gone: nothing pending will be answered
            pending, self._pending = self._pending, {}
        code = self.process.poll()
        for fut in pending.values():
            fut.set_exception(error if error is not None else
                              ShoalError(f"node {self.name!r} stopped (its process exited with code {code}) "
                                         "before answering; see the error printed above"))

    def call(self, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> Any:
        if num_returns != 1:
            raise ValueError("a process node returns one value per call; ask for num_returns=1")
        fut: _ConcurrentFuture = _ConcurrentFuture()
        payload = (tuple(_resolve(a) for a in args), {k: _resolve(v) for k, v in kwargs.items()})
        with self._lock:
            if self._closed or not self._reader.is_alive():
                raise ShoalError(f"node {self.name!r} is stopped; it cannot take the call {method!r}")
            call_id = next(self._ids)
            self._pending[call_id] = fut
            _send(self._send, (call_id, method, *payload))
        return ProcessFuture(fut)

    def kill(self) -> None:
        """End the node's process at once (its pending calls fail); :meth:`close` still tidies up after."""
        if self.process.poll() is None:
            self.process.kill()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the node (its ``close`` runs in its process) and wait for the process to end."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            alive = self._reader.is_alive()
            stop: _ConcurrentFuture = _ConcurrentFuture()
            if alive:
                self._pending[-1] = stop
                try:
                    _send(self._send, (-1, _STOP, (), {}))
                except (OSError, BrokenPipeError):
                    alive = False
        if alive:
            try:
                stop.result(timeout=timeout_s)
            except Exception:
                pass
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout_s)
        self._send.close()


def _child_main(requests_fd: int, replies_fd: int) -> None:
    """A node process: read the node to build from the parent's pipe, build it, serve its calls."""
    requests, replies = Connection(requests_fd, writable=False), Connection(replies_fd, readable=False)
    cls, args, kwargs = _recv(requests)
    _serve(requests, replies, cls, args, kwargs)


if __name__ == "__main__":
    _child_main(int(sys.argv[1]), int(sys.argv[2]))
