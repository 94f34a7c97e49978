"""Sequence and whole-episode adders: fixed-length windows of timesteps, padded at episode ends.

An episode of ``T`` steps is ``T + 1`` timesteps. Timestep ``t < T`` holds ``obs[t]`` (the
observation acted on), ``action[t]``, ``reward[t]`` (received after it) and
``discount[t] = gamma * (1 - terminated)`` (what multiplies the value of ``obs[t + 1]``).
The last timestep ``T`` holds the episode's final observation with a zero action, reward
and discount; on truncation the learner bootstraps from it through ``discount[T - 1] =
gamma``. Item fields, each ``[L, ...]`` per item:

- ``obs``, ``action``, ``reward``, ``discount``, and every ``extras`` field given to ``add``;
- ``mask`` (bool): True on real timesteps (the final-observation timestep included),
  False on padding. The transition at ``t`` is usable when ``mask[t + 1]`` is True.

:class:`SequenceAdder` emits windows starting at timesteps ``0, period, 2 * period, ...``
of each episode (consecutive windows overlap by ``L - period``; ``period = L - 1`` covers
every transition once), as soon as they are complete, and at the episode's end the
remaining windows that start before its last timestep, zero-padded.
:class:`EpisodeAdder` emits each episode whole when it ends, padded to ``max_len + 1``
timesteps, with an extra ``length`` field (``T``).

Items of one call are ordered by env copy, then start.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shoal.core.interfaces import Table
from shoal.core.types import StepResult
from shoal.data.adders.base import BaseAdder, PriorityFn
from shoal.errors import ConfigError, ShoalError

_FIELDS = ("obs", "action", "reward", "discount", "mask", "length")


class SequenceAdder(BaseAdder):
    """Windows of ``length`` timesteps every ``period`` timesteps, from ``B`` env copies."""

    def __init__(self, length: int, period: int, gamma: float = 1.0, table: Table | None = None,
                 priority_fn: PriorityFn | None = None) -> None:
        super().__init__(table, priority_fn)
        if length < 2:
            raise ConfigError(f"sequence length must be at least 2 timesteps, got {length}; use a transition adder")
        if not 1 <= period <= length:
            raise ConfigError(f"sequence period must be in [1, {length}], got {period}; "
                              f"use {length - 1} to cover every transition once")
        if not 0.0 <= gamma <= 1.0:
            raise ConfigError(f"discount gamma must be in [0, 1], got {gamma}")
        self.length, self.period, self.gamma = int(length), int(period), float(gamma)
        self._buf: dict[str, np.ndarray] | None = None

    def add_first(self, obs: np.ndarray) -> None:
        self._obs = np.array(obs, copy=True)
        self._u = np.zeros(len(self._obs), dtype=np.int64)  # timesteps written in each copy's episode
        self._buf = None

    def reset(self) -> None:
        super().reset()
        self._buf = None

    def _allocate(self, action: np.ndarray, extras: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._obs is not None
        b, n = len(self._obs), self.length
        clash = sorted(set(extras) & set(_FIELDS))
        if clash:
            raise ShoalError(f"extras {clash} clash with the adder's own fields; rename them")
        buf = {"obs": np.zeros((b, n, *self._obs.shape[1:]), self._obs.dtype),
               "action": np.zeros((b, n, *action.shape[1:]), action.dtype),
               "reward": np.zeros((b, n), np.float32), "discount": np.zeros((b, n), np.float32)}
        for k, v in extras.items():
            buf[k] = np.zeros((b, n, *v.shape[1:]), v.dtype)
        return buf

    def _before_write(self, done: np.ndarray) -> None:
        """Hook: checks before a real timestep is written."""

    def add(self, action: np.ndarray, step: StepResult, extras: dict[str, Any] | None = None) -> None:
        action = np.asarray(action)
        ex = self._check_step(action, step, extras)
        if self._buf is None:
            self._buf = self._allocate(action, ex)
        buf, b = self._buf, len(self._u)
        terminated = np.asarray(step.terminated, dtype=bool)
        done = terminated | np.asarray(step.truncated, dtype=bool)
        self._before_write(done)
        rows, pos = np.arange(b), self._u % self.length
        values = {"obs": self._obs, "action": action, "reward": step.reward,
                  "discount": self.gamma * (1.0 - terminated), **ex}
        for k, v in values.items():
            buf[k][rows, pos] = v
        self._u += 1

        out = [self._complete(int(c)) for c in np.flatnonzero(self._aligned_full())]
        final_obs = np.asarray(step.final_obs)
        for c in map(int, np.flatnonzero(done)):
            p = self._u[c] % self.length  # the final-observation timestep
            for k in buf:
                buf[k][c, p] = 0
            buf["obs"][c, p] = final_obs[c]
            self._u[c] += 1
            if self._aligned_full()[c]:
                out.append(self._complete(c))
            out.extend(self._padded(c))
            self._u[c] = 0
        done_items = [o for o in out if o is not None]
        if done_items:
            copies = np.array([o.pop("_copy") for o in done_items])
            starts = np.array([o.pop("_start") for o in done_items])
            order = np.lexsort((starts, copies))
            self._emit({k: np.stack([done_items[i][k] for i in order]) for k in done_items[0]})
        self._obs = np.array(step.next_obs, copy=True)

    def _aligned_full(self) -> np.ndarray:
        start = self._u - self.length
        return (start >= 0) & (start % self.period == 0)

    def _gather(self, c: int, start: int, real: int) -> dict[str, Any]:
        """One window of copy ``c`` from timestep ``start``, its first ``real`` timesteps stored."""
        assert self._buf is not None
        idx = (start + np.arange(real)) % self.length
        item: dict[str, Any] = {}
        for k, arr in self._buf.items():
            seq = np.zeros_like(arr[c])
            seq[:real] = arr[c, idx]
            item[k] = seq
        item["mask"] = np.arange(self.length) < real
        item["_copy"], item["_start"] = c, start
        return item

    def _complete(self, c: int) -> dict[str, Any] | None:
        return self._gather(c, int(self._u[c] - self.length), self.length)

    def _padded(self, c: int) -> list[dict[str, Any]]:
        """Windows of copy ``c``'s just-ended episode that run past its last timestep."""
        total = int(self._u[c])  # T + 1 timesteps
        first = max(0, total - self.length + 1)
        first = -(-first // self.period) * self.period  # next aligned start
        return [self._gather(c, s, total - s) for s in range(first, total - 1, self.period)]


class EpisodeAdder(SequenceAdder):
    """Whole episodes of at most ``max_len`` steps, each emitted when it ends as one item of
    ``max_len + 1`` timesteps (zero-padded, ``mask`` marks real ones) plus ``length`` = steps."""

    def __init__(self, max_len: int, gamma: float = 1.0, table: Table | None = None,
                 priority_fn: PriorityFn | None = None) -> None:
        if max_len < 1:
            raise ConfigError(f"max_len must be at least 1 step, got {max_len}; pass the env's step limit")
        super().__init__(max_len + 1, max_len + 1, gamma, table, priority_fn)
        self.max_len = int(max_len)

    def _before_write(self, done: np.ndarray) -> None:
        if (self._u >= self.max_len).any():
            raise ShoalError(f"an episode ran past max_len={self.max_len} steps; raise max_len or cap episodes "
                             "with a time limit")

    def _gather(self, c: int, start: int, real: int) -> dict[str, Any]:
        item = super()._gather(c, start, real)
        item["length"] = np.int32(real - 1)
        return item
