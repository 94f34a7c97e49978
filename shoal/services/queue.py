"""A bounded trajectory queue with backpressure, built on :class:`~shoal.data.table.ReplayTable`.

Each item (e.g. one fixed-length unroll) is sampled exactly once, oldest first. When the
queue is full a producer either waits (``overflow="block"``, up to its timeout, then
:class:`QueueFull`) so actors slow down instead of filling memory, or the oldest waiting
item is dropped and counted (``overflow="drop_oldest"``), for producers that must never
stall. Consumers wait up to their timeout for a batch. :meth:`TrajectoryQueue.close`
releases every waiting producer and consumer, so a program can always stop.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np

from shoal.data.rate_limiter import RateLimited, RateLimiter
from shoal.data.selectors import Fifo
from shoal.data.table import ReplayTable
from shoal.errors import ConfigError, ShoalError

OVERFLOW_MODES = ("block", "drop_oldest")
_SLICE = 0.1  # a waiting call looks at the closed flag this often (seconds)


class QueueFull(ShoalError):
    """A blocking queue stayed full for the producer's whole timeout."""


class QueueEmpty(ShoalError):
    """A consumer's timeout passed before enough items arrived."""


class TrajectoryQueue:
    """FIFO of at most ``capacity`` items, each handed out once.

    Args:
        capacity: most items waiting at once.
        overflow: ``block`` (producers wait, then :class:`QueueFull`) or ``drop_oldest``.
        timeout: default wait in seconds for producers and consumers (``None``: for ever).
    """

    def __init__(self, capacity: int, overflow: str = "block", timeout: float | None = 10.0, name: str = "queue") -> None:
        if overflow not in OVERFLOW_MODES:
            raise ConfigError(f"queue overflow must be one of {', '.join(OVERFLOW_MODES)}, got {overflow!r}")
        self.overflow = overflow
        self.timeout = timeout
        limiter = RateLimiter.queue(capacity) if overflow == "block" else RateLimiter.min_size(1)
        self.table = ReplayTable(capacity, Fifo(), rate_limiter=limiter, max_times_sampled=1, timeout=timeout, name=name)
        self.num_put = 0
        self.num_got = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self.table)

    @property
    def capacity(self) -> int:
        return self.table.capacity

    @property
    def num_dropped(self) -> int:
        """Items dropped unread because the queue was full (``drop_oldest``)."""
        return self.table.num_evicted

    def put(self, items: dict[str, np.ndarray], timeout: float | None | Literal["default"] = "default") -> bool:
        """Append a batch of items (leading axis = item); False (nothing added) once the queue is closed.

        ``timeout``: seconds to wait for room (None: as long as the queue is open), then :class:`QueueFull`.
        """
        return self.put_timed(items, timeout) is not None

    def put_timed(self, items: dict[str, np.ndarray], timeout: float | None | Literal["default"] = "default") -> float | None:
        """:meth:`put`, returning the seconds the producer waited for room (backpressure), or None once closed."""
        wait = self.timeout if timeout == "default" else timeout
        start = time.monotonic()
        deadline = None if wait is None else start + wait
        first = True
        while not self.closed:
            left = None if deadline is None else deadline - time.monotonic()
            try:  # the first try does not wait, so a put into a queue with room counts no wait at all
                self.table.insert(items, timeout=0.0 if first else _SLICE if left is None else max(0.0, min(_SLICE, left)))
            except RateLimited:
                first = False
                if left is not None and left <= 0:
                    raise QueueFull(f"queue {self.table.name!r} stayed full ({self.capacity} items) for {wait} s; "
                                    "the consumer is slower than the producers: add learner capacity or use "
                                    "overflow=drop_oldest") from None
                continue
            self.num_put += len(next(iter(items.values())))
            return 0.0 if first else time.monotonic() - start
        return None

    def get(self, n: int, timeout: float | None | Literal["default"] = "default") -> dict[str, np.ndarray] | None:
        """The ``n`` oldest items, waiting up to ``timeout`` seconds (None: while open), then :class:`QueueEmpty`;
        None once the queue is closed."""
        wait = self.timeout if timeout == "default" else timeout
        if n > self.capacity:
            raise ShoalError(f"cannot get {n} items from queue {self.table.name!r} of capacity {self.capacity}; "
                             "ask for fewer or raise the capacity")
        deadline = None if wait is None else time.monotonic() + wait
        while not self.closed:
            left = None if deadline is None else deadline - time.monotonic()
            try:  # FIFO is distinct: the sample waits for n items
                items, _, _ = self.table.sample(n, timeout=_SLICE if left is None else max(0.0, min(_SLICE, left)))
            except RateLimited:
                if left is not None and left <= 0:
                    raise QueueEmpty(f"queue {self.table.name!r} held {len(self.table)} of {n} items after {wait} s; "
                                     "the producers are stalled or too few") from None
                continue
            self.num_got += n
            return items
        return None

    def close(self) -> None:
        """Stop the queue: waiting and later puts return False, gets None (within a fraction of a second)."""
        self.closed = True
