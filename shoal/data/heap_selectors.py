"""Heap selectors: the items of highest (or lowest) priority first.

A binary heap of ``(priority, key, slot)`` with lazy deletion: removed items and
outdated priorities stay in the heap until they surface, where they are recognised
(key no longer in its slot, or priority changed) and dropped. Ties go to the oldest
item. Sampling ``n`` returns the top ``n`` distinct items and leaves them in place.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np

from shoal.data.keys import KeyIndex
from shoal.data.selectors import Selector
from shoal.errors import ShoalError


class _Heap(Selector):
    distinct = True
    _sign = 1.0  # +1: smallest priority on top; -1: largest

    def bind(self, index: KeyIndex) -> None:
        super().bind(index)
        self.priority = np.zeros(index.capacity, dtype=np.float64)
        self.heap: list[tuple[float, int, int]] = []

    def _push(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        assert self.index is not None
        priorities = np.asarray(priorities, dtype=np.float64)
        if priorities.shape != np.shape(slots) or not np.isfinite(priorities).all():
            raise ShoalError(f"heap selectors need one finite priority per item, got {priorities!r}; "
                             "pass a priority for every inserted item")
        self.priority[slots] = priorities
        keys = self.index.slot_key[slots]
        for p, k, s in zip((self._sign * priorities).tolist(), keys.tolist(), np.asarray(slots).tolist()):
            heapq.heappush(self.heap, (p, k, s))
        if len(self.heap) > 2 * self.index.size + 64:
            self._rebuild()

    def _rebuild(self) -> None:
        assert self.index is not None
        live = self.index.live_slots()
        self.heap = list(zip((self._sign * self.priority[live]).tolist(),
                             self.index.slot_key[live].tolist(), live.tolist()))
        heapq.heapify(self.heap)

    def insert(self, slots: np.ndarray, priorities: np.ndarray | None) -> None:
        """Items without a priority get 1.0."""
        self._push(slots, np.ones(len(slots)) if priorities is None else priorities)

    def update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        self._push(slots, priorities)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.index is not None
        slot_key = self.index.slot_key
        taken: set[int] = set()
        top: list[tuple[float, int, int]] = []
        while len(top) < n and self.heap:
            entry = heapq.heappop(self.heap)
            p, k, s = entry
            if slot_key[s] != k or p != self._sign * self.priority[s] or k in taken:
                continue  # removed, re-prioritised or a duplicate entry
            taken.add(k)
            top.append(entry)
        for entry in top:
            heapq.heappush(self.heap, entry)
        if len(top) < n:
            raise ShoalError(f"heap selector holds {len(top)} items, {n} requested; sample at most len(table)")
        return np.array([s for _, _, s in top], dtype=np.int64), np.ones(n)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "priority": self.priority.copy()}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.priority = np.asarray(state["priority"], dtype=np.float64).copy()
        self._rebuild()


class MaxHeap(_Heap):
    """The items of highest priority first (ties: oldest first)."""

    _sign = -1.0


class MinHeap(_Heap):
    """The items of lowest priority first (ties: oldest first)."""

    _sign = 1.0
