"""Transition adders: one-step and n-step ``(obs, action, reward, discount, next_obs)`` items.

Item fields, each with a leading item axis:

- ``obs``: the observation the action was taken in (step ``s``);
- ``action``: the action taken;
- ``reward``: ``sum_{k<m} gamma**k * r_{s+k}`` over the ``m`` steps of the window (``m = n``
  except at an episode's end, where every remaining start gets a shorter window);
- ``discount``: what to multiply the bootstrap value by: ``gamma**m``, or 0 when the
  episode terminated inside the window (truncation still bootstraps);
- ``next_obs``: the observation ``m`` steps later, the episode's final observation when
  it ended inside the window;
- every ``extras`` field given to :meth:`add`, taken at the window's first step.

Items of one call are ordered by start step, then env copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shoal.core.interfaces import Table
from shoal.core.types import StepResult
from shoal.data.adders.base import BaseAdder, PriorityFn, done_mask
from shoal.errors import ConfigError, ShoalError


class NStepTransitionAdder(BaseAdder):
    """n-step transitions from ``B`` env copies stepped together."""

    def __init__(self, n: int, gamma: float, table: Table | None = None,
                 priority_fn: PriorityFn | None = None) -> None:
        super().__init__(table, priority_fn)
        if n < 1:
            raise ConfigError(f"n-step adder needs n >= 1, got {n}; use n=1 for one-step transitions")
        if not 0.0 <= gamma <= 1.0:
            raise ConfigError(f"discount gamma must be in [0, 1], got {gamma}; 0.99 is usual")
        self.n = int(n)
        self.gamma = float(gamma)
        self._buf: dict[str, np.ndarray] | None = None

    def add_first(self, obs: np.ndarray) -> None:
        self._obs = np.array(obs, copy=True)
        b = len(self._obs)
        self._t = 0  # steps added since add_first; the window ring is indexed by t % n
        self._start = np.zeros(b, dtype=np.int64)  # first step of each copy's pending window
        self._buf = None

    def reset(self) -> None:
        super().reset()
        self._buf = None

    def _allocate(self, action: np.ndarray, extras: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._obs is not None
        n = self.n
        buf = {"obs": np.zeros((n, *self._obs.shape), self._obs.dtype),
               "action": np.zeros((n, *action.shape), action.dtype),
               "reward": np.zeros((n, len(self._obs)), np.float64)}
        clash = sorted(set(extras) & {"obs", "action", "reward", "discount", "next_obs"})
        if clash:
            raise ShoalError(f"extras {clash} clash with the adder's own fields; rename them")
        for k, v in extras.items():
            buf["x:" + k] = np.zeros((n, *v.shape), v.dtype)
        return buf

    def add(self, action: np.ndarray, step: StepResult, extras: dict[str, Any] | None = None) -> None:
        action = np.asarray(action)
        ex = self._check_step(action, step, extras)
        if self._buf is None:
            self._buf = self._allocate(action, ex)
        buf, t, n = self._buf, self._t, self.n
        p = t % n
        buf["obs"][p] = self._obs
        buf["action"][p] = action
        buf["reward"][p] = step.reward
        for k, v in ex.items():
            buf["x:" + k][p] = v
        terminated = np.asarray(step.terminated, dtype=bool)
        done = terminated | np.asarray(step.truncated, dtype=bool)
        next_obs = np.where(done_mask(done, step.next_obs), step.final_obs, step.next_obs)

        groups = []
        full = ~done & (t - self._start + 1 >= n)
        if full.any():
            groups.append(self._window(np.flatnonzero(full), n, np.zeros(len(self._start), bool), next_obs))
        for m in range(1, n + 1):  # at an episode end, every pending start gets a window
            ending = done & (t - m + 1 >= self._start)
            if ending.any():
                groups.append(self._window(np.flatnonzero(ending), m, terminated, next_obs))
        if groups:
            items = {k: np.concatenate([g[k] for g in groups]) for k in groups[0]}
            order = np.lexsort((items.pop("_copy"), items.pop("_start")))
            self._emit({k: v[order] for k, v in items.items()})

        self._start[done] = t + 1
        self._t = t + 1
        self._obs = np.array(step.next_obs, copy=True)

    def _window(self, copies: np.ndarray, m: int, terminated: np.ndarray,
                next_obs: np.ndarray) -> dict[str, np.ndarray]:
        """Items for windows of ``m`` steps ending at the current step, for ``copies``."""
        assert self._buf is not None
        buf, s = self._buf, self._t - m + 1
        ret = np.zeros(len(copies), np.float64)
        for k in range(m):
            ret += self.gamma ** k * buf["reward"][(s + k) % self.n, copies]
        discount = np.where(terminated[copies], 0.0, self.gamma ** m)
        first = s % self.n
        items = {"obs": buf["obs"][first, copies], "action": buf["action"][first, copies],
                 "reward": ret.astype(np.float32), "discount": discount.astype(np.float32),
                 "next_obs": next_obs[copies]}
        for key, arr in buf.items():
            if key.startswith("x:"):
                items[key[2:]] = arr[first, copies]
        items["_copy"] = copies
        items["_start"] = np.full(len(copies), s)
        return items


class TransitionAdder(NStepTransitionAdder):
    """One-step transitions: ``discount`` is ``gamma``, or 0 on termination; on truncation
    ``next_obs`` is the final observation so the learner bootstraps from it."""

    def __init__(self, gamma: float, table: Table | None = None, priority_fn: PriorityFn | None = None) -> None:
        super().__init__(1, gamma, table, priority_fn)
