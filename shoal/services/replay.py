"""A replay server: one replay table as a node that actors insert into and learners sample from.

The node holds the first table of the algorithm's ``builder.make_tables()`` (for Ape-X a
prioritized table), so any backend can place it in its own process. Calls move many
items at once: ``insert`` takes whole drained batches (a ``priority`` field becomes the
insert priorities), ``sample`` returns several learner batches per call, and
``update_priorities`` takes the keys and priorities of all of them. Old items leave by
the table's FIFO remover when it is full.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from shoal.core.interfaces import Table
from shoal.data import RateLimited, RateLimiter, split_priorities
from shoal.errors import ConfigError, ShoalError

_SLICE = 0.1  # a waiting call looks at the closed flag this often (seconds)

#: One learner batch: (items, keys, sampling probabilities, table size when sampled).
SampledBatch = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, int]


class ReplayNode:
    """Serves one replay table to actors and learners (thread safe: actors' inserts and the learner's
    samples may wait on each other's progress at the same time).

    With ``rate`` = ``(samples_per_insert, min_size_to_sample, error_buffer)`` the table's rate
    limiter keeps the replay ratio inside the node, as Reverb does: an insert that would put
    the actors more than the tolerance ahead waits (backpressure on that actor), and so does a
    sample that would put the learner ahead. ``blocking=False`` (a cooperative, single-threaded
    program) refuses such a call at once instead, since nothing could release it.
    """

    def __init__(self, ctx: Any, rate: tuple[float, int, float | tuple[float, float]] | None = None,
                 blocking: bool = True) -> None:
        builder = ctx.builder()
        tables = builder.make_tables()
        if not tables:
            raise ConfigError(f"{ctx.algo} builds no replay table, so it cannot run with a replay server; "
                              "use an off-policy algorithm (e.g. dqn) or the local topology")
        self.name, self.table = next(iter(tables.items()))
        if rate is not None:
            spi, min_size, band = rate
            buffer: float | tuple[float, float] = (float(band[0]), float(band[1])) if isinstance(band, (tuple, list)) \
                else float(band)
            self.table.rate_limiter = RateLimiter(float(spi), int(min_size), buffer)
        self.blocking = blocking
        self.closed = False

    @property
    def inserted(self) -> int:
        """Items inserted so far (the rate limiter's count, kept with the table's state)."""
        return self.table.rate_limiter.inserts

    @property
    def sampled(self) -> int:
        """Items sampled so far (the rate limiter's count)."""
        return self.table.rate_limiter.samples

    def put(self, items: dict[str, np.ndarray] | None) -> float | None:
        """Insert one drained batch, waiting while the rate limiter holds the actors back.

        Returns the seconds waited (0.0: admitted at once), or None once the node is closed.
        """
        if not items:
            return None if self.closed else 0.0
        items, priorities = split_priorities(items)
        n = len(next(iter(items.values())))
        start, waited = time.monotonic(), False
        for lo in range(0, n, self.table.capacity):  # a batch larger than the table keeps its newest items
            chunk = {k: v[lo:lo + self.table.capacity] for k, v in items.items()}
            p = None if priorities is None else priorities[lo:lo + self.table.capacity]
            while True:
                if self.closed:
                    return None
                try:
                    self.table.insert(chunk, p, timeout=_SLICE if waited and self.blocking else 0.0)
                    break
                except RateLimited:
                    if not self.blocking:
                        raise RateLimited(f"replay {self.name!r} refused an insert of {len(p if p is not None else chunk)} "
                                          f"items in a cooperative program ({self.table.rate_limiter.describe()}); "
                                          "raise topology.ratio_tolerance") from None
                    waited = True
        return time.monotonic() - start if waited else 0.0

    def insert(self, *batches: dict[str, np.ndarray] | None) -> int:
        """Insert drained batches (``None`` entries are skipped) as :meth:`put` does; returns the table size."""
        for items in batches:
            self.put(items)
        return len(self.table)

    def sample(self, num_batches: int, batch_size: int, timeout: float = 0.0) -> list[SampledBatch]:
        """Up to ``num_batches`` batches in one table call; none when the table cannot sample within
        ``timeout`` seconds (too few items yet, or the rate limiter holds the learner back) or is closed.

        Each batch is an independent draw over the whole table, as a separate ``sample`` call
        would give, so each batch's importance weights are normalised over a representative batch.
        """
        if num_batches < 1:
            return []
        deadline = time.monotonic() + (timeout if self.blocking else 0.0)
        while not self.closed:
            left = deadline - time.monotonic()
            try:  # one admission check and draw under the table's lock, whoever else samples
                batches = self.table.sample_batches(num_batches, batch_size, timeout=max(0.0, min(_SLICE, left)))
            except RateLimited:
                if left <= 0:
                    return []
                continue
            size = len(self.table)
            return [(items, keys, probs, size) for items, keys, probs in batches]
        return []

    def update_priorities(self, update: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Apply ``(keys, priorities)``; keys of items already evicted are ignored."""
        if update is not None and len(update[0]):
            self.table.update_priorities(*update)

    def size(self) -> int:
        return len(self.table)

    def metrics(self) -> dict[str, float]:
        """Table size, items inserted and sampled, and the replay ratio kept since sampling began
        (samples per item inserted after the rate limiter's minimum size)."""
        since = self.inserted - self.table.rate_limiter.min_size_to_sample
        return {"replay_size": float(len(self.table)), "replay_inserted": float(self.inserted),
                "replay_sampled": float(self.sampled),
                "replay_samples_per_insert": self.sampled / since if since > 0 else 0.0}

    def close(self) -> None:
        """Release every waiting insert and sample (within a fraction of a second): the program is stopping."""
        self.closed = True

    def state(self) -> dict[str, Any]:
        return {"table": self.table.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.table.load_state(state["table"])


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
