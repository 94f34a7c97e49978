"""A replay server: one replay table as a node that actors insert into and learners sample from.

The node holds the first table of the algorithm's ``builder.make_tables()`` (for Ape-X a
prioritized table), so any backend can place it in its own process. Calls move many
items at once: ``insert`` takes whole drained batches (a ``priority`` field becomes the
insert priorities), ``sample`` returns several learner batches per call, and
``update_priorities`` takes the keys and priorities of all of them. Old items leave by
the table's FIFO remover when it is full.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shoal.core.interfaces import Table
from shoal.data import RateLimited, split_priorities
from shoal.errors import ConfigError, ShoalError

#: One learner batch: (items, keys, sampling probabilities, table size when sampled).
SampledBatch = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, int]


class ReplayNode:
    """Serves one replay table to actors and learners."""

    def __init__(self, ctx: Any) -> None:
        builder = ctx.builder()
        tables = builder.make_tables()
        if not tables:
            raise ConfigError(f"{ctx.algo} builds no replay table, so it cannot run with a replay server; "
                              "use an off-policy algorithm (e.g. dqn) or the local topology")
        self.name, self.table = next(iter(tables.items()))
        self.inserted = 0
        self.sampled = 0

    def insert(self, *batches: dict[str, np.ndarray] | None) -> int:
        """Insert drained batches (``None`` entries are skipped); returns the table size."""
        for items in batches:
            if items is None:
                continue
            items, priorities = split_priorities(items)
            n = len(next(iter(items.values())))
            for start in range(0, n, self.table.capacity):  # a batch larger than the table keeps its newest items
                chunk = {k: v[start:start + self.table.capacity] for k, v in items.items()}
                p = None if priorities is None else priorities[start:start + self.table.capacity]
                self.table.insert(chunk, p)
            self.inserted += n
        return len(self.table)

    def sample(self, num_batches: int, batch_size: int) -> list[SampledBatch]:
        """Up to ``num_batches`` batches in one table call (none while the table cannot sample yet).

        Each batch is an independent draw over the whole table, as a separate ``sample`` call
        would give, so each batch's importance weights are normalised over a representative batch.
        """
        if num_batches < 1 or not self.table.can_sample(batch_size):
            return []
        size = len(self.table)
        batches = self.table.sample_batches(num_batches, batch_size, timeout=0.0)
        self.sampled += sum(len(keys) for _, keys, _ in batches)
        return [(items, keys, probs, size) for items, keys, probs in batches]

    def update_priorities(self, update: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Apply ``(keys, priorities)``; keys of items already evicted are ignored."""
        if update is not None and len(update[0]):
            self.table.update_priorities(*update)

    def size(self) -> int:
        return len(self.table)

    def state(self) -> dict[str, Any]:
        return {"table": self.table.state(), "inserted": self.inserted, "sampled": self.sampled}

    def load_state(self, state: dict[str, Any]) -> None:
        self.table.load_state(state["table"])
        self.inserted = int(state.get("inserted", 0))
        self.sampled = int(state.get("sampled", 0))


class BatchFeed(Table):
    """The learner's side of a replay server: a table that hands out batches sampled elsewhere.

    A learner built with this in place of its replay table runs unchanged: each
    ``sample`` returns the next fed batch (``__len__`` is the server table's size when it
    was drawn, for importance weights), and ``update_priorities`` collects the new
    priorities until :meth:`take_priorities` sends them back in one call.
    """

    def __init__(self) -> None:
        self._batches: list[SampledBatch] = []
        self._size = 0
        self._keys: list[np.ndarray] = []
        self._priorities: list[np.ndarray] = []

    def feed(self, batches: list[SampledBatch]) -> None:
        """Queue batches for the next ``sample`` calls."""
        self._batches = list(reversed(batches)) + self._batches

    @property
    def pending(self) -> int:
        """Batches fed and not yet sampled."""
        return len(self._batches)

    def insert(self, items: dict[str, np.ndarray], priorities: np.ndarray | None = None) -> np.ndarray:
        raise ShoalError("a BatchFeed is read-only: actors insert into the replay server, not into the learner")

    def can_sample(self, n: int = 1) -> bool:
        return bool(self._batches)

    def sample(self, n: int, timeout: Any = None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        if not self._batches:
            raise RateLimited("the learner sampled more batches than the replay server sent; "
                              "step it once per fed batch")
        items, keys, probs, self._size = self._batches.pop()
        if len(keys) != n:
            raise ShoalError(f"the replay server sent batches of {len(keys)} items but the learner asked for {n}; "
                             "sample with the learner's batch_size")
        return items, keys, probs

    def try_sample(self, n: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray] | None:
        return self.sample(n) if self._batches else None

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        self._keys.append(np.asarray(keys, np.int64).reshape(-1))
        self._priorities.append(np.asarray(priorities, np.float64).reshape(-1))

    def take_priorities(self) -> tuple[np.ndarray, np.ndarray] | None:
        """All ``(keys, priorities)`` collected since the last call (None if none)."""
        if not self._keys:
            return None
        out = np.concatenate(self._keys), np.concatenate(self._priorities)
        self._keys, self._priorities = [], []
        return out

    def __len__(self) -> int:
        return self._size
