"""Recent experience as chains of transitions, from which segments of ``L`` consecutive steps are drawn.

Transitions arrive as flat items (``obs, action, true_reward, next_obs, done``), from any number
of env copies and actors interleaved. A transition continues the chain whose last ``next_obs`` is
exactly its ``obs`` (what an env copy hands on from one step to the next); anything else, or a
chain ended by ``done``, starts a new chain. So segments never cross an episode boundary, a reset
or an env restart, without the data having to say which copy it came from.

The buffer is a ring of ``capacity`` transitions (recent experience only); each slot keeps the
slot and serial number of its predecessor, so a segment ending at slot ``i`` is found by following
predecessors, and one whose older steps were overwritten is recognised and skipped.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Open chains remembered at once (each waits for the transition that continues it).
MAX_OPEN_CHAINS = 4096


@dataclass
class Segments:
    """``N`` segments of ``L`` steps: observations ``[N, L, ...]``, actions ``[N, L, ...]``, true rewards ``[N, L]``."""

    obs: np.ndarray
    action: np.ndarray
    true_reward: np.ndarray

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def length(self) -> int:
        return int(self.obs.shape[1])

    @property
    def true_return(self) -> np.ndarray:
        """Sum of the env's rewards over each segment ``[N]``."""
        return self.true_reward.sum(axis=1)

    def take(self, index: np.ndarray) -> "Segments":
        """The segments at ``index``."""
        return Segments(self.obs[index], self.action[index], self.true_reward[index])

    @staticmethod
    def concat(parts: list["Segments"]) -> "Segments":
        """One batch of the segments of ``parts``, in order."""
        return Segments(np.concatenate([p.obs for p in parts]), np.concatenate([p.action for p in parts]),
                        np.concatenate([p.true_reward for p in parts]))


class SegmentBuffer:
    """The last ``capacity`` transitions, chained per env copy; draws segments of a given length."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], act_shape: tuple[int, ...],
                 obs_dtype: Any = np.float32) -> None:
        self.capacity = int(capacity)
        self.obs = np.zeros((self.capacity, *obs_shape), obs_dtype)
        self.action = np.zeros((self.capacity, *act_shape), np.float32)
        self.true_reward = np.zeros(self.capacity, np.float64)
        self.serial = np.full(self.capacity, -1, np.int64)  # -1: empty slot
        self.prev = np.full(self.capacity, -1, np.int64)  # predecessor's slot (-1: a chain starts here)
        self.prev_serial = np.full(self.capacity, -1, np.int64)
        self.run = np.zeros(self.capacity, np.int64)  # steps in the chain up to and including this one
        self.added = 0
        self._open: OrderedDict[bytes, tuple[int, int]] = OrderedDict()  # next_obs -> (slot, serial)

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    def add(self, obs: np.ndarray, action: np.ndarray, true_reward: np.ndarray, next_obs: np.ndarray,
            done: np.ndarray) -> None:
        """Append ``N`` transitions in the order they happened (within each env copy)."""
        n = len(obs)
        for i in range(n):  # chaining is a lookup per transition; N is one hand-over's steps
            slot, serial = self.added % self.capacity, self.added
            self.obs[slot], self.action[slot], self.true_reward[slot] = obs[i], action[i], true_reward[i]
            link = self._open.pop(np.ascontiguousarray(obs[i]).tobytes(), None)
            if link is not None and self.serial[link[0]] == link[1]:
                self.prev[slot], self.prev_serial[slot] = link
                self.run[slot] = self.run[link[0]] + 1
            else:
                self.prev[slot], self.prev_serial[slot], self.run[slot] = -1, -1, 1
            self.serial[slot] = serial
            if not bool(done[i]):
                self._open[np.ascontiguousarray(next_obs[i]).tobytes()] = (slot, serial)
                if len(self._open) > MAX_OPEN_CHAINS:
                    self._open.popitem(last=False)
            self.added += 1

    def _chains(self, ends: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Slots ``[N, L]`` (oldest first) of the segments ending at ``ends``, and which are intact."""
        slots = np.empty((len(ends), length), np.int64)
        slots[:, -1] = ends
        ok = self.run[ends] >= length
        for j in range(length - 2, -1, -1):  # one vectorised hop back per step of the segment
            nxt = slots[:, j + 1]
            p = self.prev[nxt]
            ok &= (p >= 0) & (self.serial[np.maximum(p, 0)] == self.prev_serial[nxt])
            slots[:, j] = np.maximum(p, 0)
        return slots, ok

    def sample(self, n: int, length: int, rng: np.random.Generator) -> Segments | None:
        """``n`` segments of ``length`` steps, uniformly over the segment ends held; None if there are none."""
        stored = len(self)
        if stored == 0:
            return None
        candidates = np.flatnonzero((self.serial[:stored] >= 0) & (self.run[:stored] >= length))
        if len(candidates) == 0:
            return None
        _, ok = self._chains(candidates, length)
        candidates = candidates[ok]
        if len(candidates) == 0:
            return None
        ends = candidates[rng.integers(0, len(candidates), n)]
        slots, _ = self._chains(ends, length)
        return Segments(self.obs[slots], self.action[slots], self.true_reward[slots])

    def recent(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Observations and actions of the last ``min(n, len)`` transitions (for statistics)."""
        m = min(n, len(self))
        slots = (self.added - 1 - np.arange(m)) % self.capacity
        return self.obs[slots], self.action[slots]

    def state(self) -> dict[str, Any]:
        """Everything held, for checkpoints (open chains are not kept: a resumed run starts new ones)."""
        return {"obs": self.obs.copy(), "action": self.action.copy(), "true_reward": self.true_reward.copy(),
                "serial": self.serial.copy(), "prev": self.prev.copy(), "prev_serial": self.prev_serial.copy(),
                "run": self.run.copy(), "added": self.added}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        for k in ("obs", "action", "true_reward", "serial", "prev", "prev_serial", "run"):
            getattr(self, k)[...] = np.asarray(state[k])
        self.added = int(state["added"])
        self._open.clear()
