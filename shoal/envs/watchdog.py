"""Stepping and resetting an env with a deadline: :class:`StepWatchdog` runs each call in a worker thread.

With a deadline (``env_step_timeout`` > 0) the env therefore runs in the watchdog's thread, not the caller's:
every ``step`` and ``reset`` (an env that cares which thread calls it, e.g. one holding thread-local state
or a GUI, sees the watchdog's). The env is still made in the caller's thread.

A Python thread cannot be killed, so a call that never returns is abandoned, not stopped:
its thread (a daemon) stays blocked with the env object it holds, and the caller makes a
new env with a new watchdog; should the call return late, the thread closes that env and
ends. Each abandoned env costs its memory and one blocked thread for as long as its call
hangs (the rest of the process at worst); ``max_restarts`` bounds how many there can be. An env that hangs
while holding the GIL (a C extension in a busy loop) would block the caller too: such envs
need ``vector=async``, whose worker processes are terminated instead
(:meth:`shoal.envs.make.VecEnv.step` with a ``timeout``).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable


class EnvHung(Exception):
    """An env call did not return within its deadline (``env_step_timeout``)."""


class StepWatchdog:
    """Runs calls one at a time in a daemon thread of its own, each with a deadline.

    After a call missed its deadline the watchdog is spent (the thread may never come back):
    :meth:`call` refuses further calls, and the owner makes a new env and a new watchdog.
    The hand-over costs two queue operations and a thread switch per call.
    """

    def __init__(self, name: str = "env-step") -> None:
        self._requests: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self.spent = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            req = self._requests.get()
            if req is None:
                return
            fn, args = req
            try:
                self._results.put((True, fn(*args)))
            except BaseException as e:  # handed to the caller, who re-raises it
                self._results.put((False, e))

    def call(self, timeout: float, fn: Callable[..., Any], *args: Any, what: str = "step") -> Any:
        """``fn(*args)`` in the worker thread; :class:`EnvHung` if it has not returned after ``timeout`` seconds
        (``what`` names the call in its message: ``step`` or ``reset``)."""
        if self.spent:
            raise RuntimeError("this watchdog's thread is abandoned to a call that hung; make a new one")
        self._requests.put((fn, args))
        try:
            ok, value = self._results.get(timeout=timeout)
        except queue.Empty:
            self.spent = True
            raise EnvHung(f"{what} did not return within {timeout:g} s (env_step_timeout)") from None
        if not ok:
            raise value
        return value

    def close(self, then: Callable[[], Any] | None = None) -> None:
        """Let the worker thread end once its current call returns, after calling ``then`` there (e.g. the
        env's ``close``). A spent watchdog's thread ends so if its hung call ever returns, instead of
        staying blocked for the rest of the process."""
        if then is not None:
            self._requests.put((then, ()))
        self._requests.put(None)
