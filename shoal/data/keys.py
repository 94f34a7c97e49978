"""Which key lives in which storage slot, for a table of fixed capacity.

Keys grow monotonically and every live key ``k`` sits in slot ``k % capacity``; a new
item takes the first free slot at or after ``next_key % capacity`` (in ring order), so
its key may skip values when items were removed out of order (queues, stacks). The
mapping from a key to its slot is then pure arithmetic, and a key whose item is gone
is recognised by ``slot_key[k % capacity] != k``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shoal.errors import ShoalError


class KeyIndex:
    """Slot bookkeeping for a table: allocate, free, look up, oldest and newest keys."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.slot_key = np.full(self.capacity, -1, dtype=np.int64)
        self.size = 0
        self.next_key = 0
        self._oldest = 0  # a lower bound on every live key
        self._newest = -1  # an upper bound on every live key

    def allocate(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Take ``n`` free slots; returns ``(slots, keys)`` with keys increasing."""
        if self.size + n > self.capacity:
            raise ShoalError(
                f"cannot allocate {n} slots with {self.capacity - self.size} free; evict items first")
        c = self.capacity
        keys = self.next_key + np.arange(n, dtype=np.int64)
        slots = keys % c
        if n and not (self.slot_key[slots] < 0).all():
            free = np.flatnonzero(self.slot_key < 0)
            rel = np.sort((free - self.next_key) % c)[:n]
            keys = self.next_key + rel
            slots = keys % c
        self.slot_key[slots] = keys
        self.size += n
        if n:
            self.next_key = int(keys[-1]) + 1
            self._newest = self.next_key - 1
        return slots, keys

    def free(self, slots: np.ndarray) -> None:
        """Mark ``slots`` empty (their keys become stale)."""
        slots = np.unique(np.asarray(slots, dtype=np.int64))
        slots = slots[self.slot_key[slots] >= 0]
        keys = np.sort(self.slot_key[slots])
        self.slot_key[slots] = -1
        self.size -= len(slots)
        # Keep the bounds tight when a run of keys at either end went away (FIFO, LIFO).
        self._oldest += _run_length(keys - self._oldest)
        self._newest -= _run_length(self._newest - keys[::-1])

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(slots, live)``: the slot of each key and whether that key is still stored."""
        keys = np.asarray(keys, dtype=np.int64)
        slots = keys % self.capacity
        return slots, (self.slot_key[slots] == keys) & (keys >= 0)

    def live_slots(self) -> np.ndarray:
        """Slots holding items, ordered by key (oldest first)."""
        slots = np.flatnonzero(self.slot_key >= 0)
        return slots[np.argsort(self.slot_key[slots], kind="stable")]

    def oldest(self, n: int) -> np.ndarray:
        """Slots of the ``n`` oldest items (fewer if the table holds fewer), oldest first."""
        keys = self._scan(self._oldest, min(n, self.size), +1)
        if len(keys):
            self._oldest = int(keys[0])
        return keys % self.capacity

    def newest(self, n: int) -> np.ndarray:
        """Slots of the ``n`` newest items (fewer if the table holds fewer), newest first."""
        keys = self._scan(self._newest, min(n, self.size), -1)
        if len(keys):
            self._newest = int(keys[0])
        return keys % self.capacity

    def _scan(self, start: int, n: int, step: int) -> np.ndarray:
        """The first ``n`` live keys from ``start`` going up (step 1) or down (step -1).

        Walks the key range in chunks, which is quick when removed keys leave few gaps
        (eviction, queues, random removals); gives up for a full sort once it has walked
        more keys than the table holds (stacks, whose keys can skip far ahead).
        """
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        found, count, walked, k = [], 0, 0, start
        chunk = max(2 * n, 256)
        while count < n and walked <= self.capacity and 0 <= k < self.next_key:
            keys = k + step * np.arange(chunk, dtype=np.int64)
            live = keys[self.slot_key[keys % self.capacity] == keys]
            found.append(live[:n - count])
            count += len(found[-1])
            walked += chunk
            k += step * chunk
        if count == n:
            return np.concatenate(found)
        live = self.live_slots()
        return self.slot_key[live if step > 0 else live[::-1]][:n]

    def state(self) -> dict[str, Any]:
        return {"slot_key": self.slot_key.copy(), "size": self.size, "next_key": self.next_key,
                "oldest": self._oldest, "newest": self._newest}

    def load_state(self, state: dict[str, Any]) -> None:
        slot_key = np.asarray(state["slot_key"], dtype=np.int64)
        if slot_key.shape != (self.capacity,):
            raise ShoalError(
                f"replay state has capacity {slot_key.shape[0]} but this table has {self.capacity}; "
                "build the table with the capacity it was saved with")
        self.slot_key = slot_key.copy()
        self.size = int(state["size"])
        self.next_key = int(state["next_key"])
        self._oldest = int(state["oldest"])
        self._newest = int(state["newest"])


def _run_length(offsets: np.ndarray) -> int:
    """How many of ``offsets`` (sorted ascending) form the run 0, 1, 2, ..."""
    start = int(np.searchsorted(offsets, 0))
    tail = offsets[start:]
    breaks = np.flatnonzero(tail != np.arange(len(tail)))
    return int(breaks[0]) if len(breaks) else len(tail)
