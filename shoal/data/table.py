"""The replay table: storage + selector + FIFO remover + rate limiter, thread safe.

Keys are int64 and grow monotonically; ``update_priorities`` ignores keys whose item is
gone. Blocking follows ``timeout``: ``0`` refuses at once, ``None`` waits for ever, a
number waits that many seconds; a refused call raises :class:`RateLimited`.
:meth:`ReplayTable.try_sample` returns ``None`` instead, and :meth:`can_sample` /
:meth:`can_insert` ask without acting.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from shoal.core.interfaces import Table
from shoal.data.keys import KeyIndex
from shoal.data.rate_limiter import RateLimited, RateLimiter
from shoal.data.selectors import Fifo, Prioritized, Selector, Uniform
from shoal.data.storage import ArrayStorage, Storage, batch_size
from shoal.errors import ConfigError, ShoalError

STATE_VERSION = 1


class _TableTimeout:
    """Marker: use the table's own ``timeout``."""

    def __repr__(self) -> str:
        return "TABLE_TIMEOUT"


TABLE_TIMEOUT = _TableTimeout()
Timeout = float | None | _TableTimeout


class ReplayTable(Table):
    """A table of ``capacity`` items; when full, inserting evicts the oldest items.

    Args:
        capacity: most items held at once.
        selector: which items ``sample`` returns (default :class:`Uniform`).
        storage: where items live (default :class:`ArrayStorage`; see ``FrameStackStorage``).
        rate_limiter: when inserts and samples are admitted (default: sample once 1 item is stored).
        max_times_sampled: remove an item after it was sampled this often (0: never; 1: a queue).
        timeout: default wait in seconds for a refused call (0: refuse at once, None: wait for ever).
        name: used in messages.
    """

    def __init__(self, capacity: int, selector: Selector | None = None, storage: Storage | None = None,
                 rate_limiter: RateLimiter | None = None, max_times_sampled: int = 0,
                 timeout: float | None = 0.0, name: str = "replay") -> None:
        if capacity < 1:
            raise ConfigError(f"table capacity must be at least 1, got {capacity}; pass a positive capacity")
        if max_times_sampled < 0:
            raise ConfigError(f"max_times_sampled must be >= 0, got {max_times_sampled}; use 0 for no limit")
        self.capacity = int(capacity)
        self.name = name
        self.index = KeyIndex(self.capacity)
        self.selector = selector if selector is not None else Uniform()
        self.selector.bind(self.index)
        self.storage = storage if storage is not None else ArrayStorage(self.capacity)
        if self.storage.capacity != self.capacity:
            raise ConfigError(f"storage capacity {self.storage.capacity} differs from table capacity {self.capacity}; "
                              "build both with the same capacity")
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter.min_size(1)
        self.max_times_sampled = int(max_times_sampled)
        self.times_sampled = np.zeros(self.capacity, dtype=np.int64)
        self.timeout = timeout
        self.num_evicted = 0
        self._cond = threading.Condition(threading.RLock())

    # -- convenience constructors ------------------------------------------------------------
    @classmethod
    def uniform(cls, capacity: int, min_size: int = 1, seed: int | None = 0, **kwargs: Any) -> "ReplayTable":
        """Uniform replay that samples once ``min_size`` items are stored (or per ``rate_limiter=``)."""
        kwargs.setdefault("rate_limiter", RateLimiter.min_size(min_size))
        return cls(capacity, Uniform(seed), **kwargs)

    @classmethod
    def prioritized(cls, capacity: int, alpha: float = 0.6, min_size: int = 1, seed: int | None = 0,
                    **kwargs: Any) -> "ReplayTable":
        """Prioritized replay (sum tree, exponent ``alpha``)."""
        kwargs.setdefault("rate_limiter", RateLimiter.min_size(min_size))
        return cls(capacity, Prioritized(alpha, seed), **kwargs)

    @classmethod
    def queue(cls, capacity: int, **kwargs: Any) -> "ReplayTable":
        """A FIFO queue: each item sampled once, in order; inserts are refused (or wait) when full."""
        kwargs.setdefault("rate_limiter", RateLimiter.queue(capacity))
        return cls(capacity, Fifo(), max_times_sampled=1, **kwargs)

    # -- queries -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.index.size

    def can_insert(self, n: int = 1) -> bool:
        """Whether an insert of ``n`` items would be admitted now."""
        with self._cond:
            return self.rate_limiter.can_insert(n, self.index.size)

    def can_sample(self, n: int = 1) -> bool:
        """Whether a sample of ``n`` items would be admitted now."""
        with self._cond:
            size = self.index.size
            return self.rate_limiter.can_sample(n, size) and (size >= n or not self.selector.distinct)

    def _wait(self, allowed: Any, timeout: Timeout, what: str) -> None:
        if isinstance(timeout, _TableTimeout):
            timeout = self.timeout
        if allowed():
            return
        if timeout is None or timeout > 0:
            if self._cond.wait_for(allowed, timeout):
                return
        waited = "" if timeout == 0 else f" within {timeout} s"
        raise RateLimited(f"table {self.name!r} refused to {what}{waited} (size={len(self)}, "
                          f"{self.rate_limiter.describe()}); interleave inserts and samples, or pass a timeout to wait")

    # -- insert ----------------------------------------------------------------------------------
    def insert(self, items: dict[str, np.ndarray], priorities: np.ndarray | None = None,
               timeout: Timeout = TABLE_TIMEOUT) -> np.ndarray:
        """Insert a batch of items (leading axis = item); returns their keys.

        ``timeout``: seconds to wait when the rate limiter refuses (0: raise at once, None: wait
        for ever); by default the table's ``timeout``. Raises :class:`RateLimited` when refused.
        """
        n = batch_size(items)
        if n > self.capacity:
            raise ShoalError(f"cannot insert {n} items into table {self.name!r} of capacity {self.capacity}; "
                             "insert fewer at once or raise the capacity")
        if priorities is not None:
            priorities = np.asarray(priorities, dtype=np.float64).reshape(-1)
            if len(priorities) != n:
                raise ShoalError(f"got {len(priorities)} priorities for {n} items; pass one per item")
            self.selector.check(priorities)
        with self._cond:
            self._wait(lambda: self.rate_limiter.can_insert(n, self.index.size), timeout, f"insert {n} items")
            plan = self.storage.prepare(items)
            self._evict(self.index.size + n - self.capacity)
            while (short := self.storage.shortfall(plan)) > 0:
                if self.index.size == 0:
                    raise ShoalError(f"storage of table {self.name!r} cannot fit {n} items even when empty; "
                                     "insert fewer at once or enlarge the storage")
                self._evict(short)
            slots, keys = self.index.allocate(n)
            self.storage.write(slots, plan)
            self.times_sampled[slots] = 0
            self.selector.insert(slots, priorities)
            self.rate_limiter.record_insert(n)
            self._cond.notify_all()
        return keys

    def _evict(self, n: int) -> None:
        """Remove the ``n`` oldest items (the FIFO remover)."""
        if n > 0:
            slots = self.index.oldest(n)
            self._remove(slots)
            self.num_evicted += len(slots)

    def _remove(self, slots: np.ndarray) -> None:
        if len(slots):
            self.selector.remove(slots)
            self.storage.release(slots)
            self.index.free(slots)

    # -- sample ------------------------------------------------------------------------------------
    def sample(self, n: int, timeout: Timeout = TABLE_TIMEOUT
               ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """``(items, keys, probabilities)`` of ``n`` items; raises :class:`RateLimited` when refused."""
        if n < 1:
            raise ShoalError(f"sample size must be at least 1, got {n}; pass a positive batch size")
        if self.selector.distinct and n > self.capacity:
            raise ShoalError(f"{type(self.selector).__name__} returns distinct items, so a sample of {n} can never "
                             f"come from table {self.name!r} of capacity {self.capacity}; sample fewer")
        with self._cond:
            self._wait(lambda: self.can_sample(n), timeout, f"sample {n} items")
            slots, probs = self.selector.sample(n)
            keys = self.index.slot_key[slots]
            items = self.storage.read(slots)
            self.rate_limiter.record_sample(n)
            if self.max_times_sampled:
                np.add.at(self.times_sampled, slots, 1)
                done = np.unique(slots[self.times_sampled[slots] >= self.max_times_sampled])
                self._remove(done)
            self._cond.notify_all()
        return items, keys, probs

    def sample_batches(self, num_batches: int, batch_size: int, timeout: Timeout = TABLE_TIMEOUT
                       ) -> list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
        """Independent samples of ``batch_size`` items, as many :meth:`sample` calls would draw, in one call.

        Each batch is its own draw over the whole table (a prioritized one stratifies every
        batch over the whole priority mass), so batches are as independent as separate calls.
        The call is admitted as one sample (waiting per ``timeout``); a table that removes
        sampled items samples batch after batch and returns those admitted (at least one).
        """
        if num_batches < 1:
            raise ShoalError(f"number of batches must be at least 1, got {num_batches}; pass a positive count")
        with self._cond:
            if self.max_times_sampled:  # removals between batches: draw them one after the other
                out = [self.sample(batch_size, timeout)]
                while len(out) < num_batches and self.can_sample(batch_size):
                    out.append(self.sample(batch_size, timeout=0.0))
                return out
            if batch_size < 1:
                raise ShoalError(f"sample size must be at least 1, got {batch_size}; pass a positive batch size")
            if self.selector.distinct and batch_size > self.capacity:
                raise ShoalError(f"{type(self.selector).__name__} returns distinct items, so a sample of {batch_size} "
                                 f"can never come from table {self.name!r} of capacity {self.capacity}; sample fewer")
            self._wait(lambda: self.can_sample(batch_size), timeout, f"sample {num_batches} x {batch_size} items")
            slots, probs = self.selector.sample_batches(num_batches, batch_size)
            flat = slots.reshape(-1)
            keys = self.index.slot_key[flat].reshape(slots.shape)
            items = self.storage.read(flat)
            self.rate_limiter.record_sample(flat.size)
            self._cond.notify_all()
        cut = [slice(i * batch_size, (i + 1) * batch_size) for i in range(num_batches)]
        return [({k: v[s] for k, v in items.items()}, keys[i], probs[i]) for i, s in enumerate(cut)]

    def try_sample(self, n: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray] | None:
        """Like :meth:`sample` but returns ``None`` at once when the rate limiter refuses."""
        try:
            return self.sample(n, timeout=0.0)
        except RateLimited:
            return None

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        """Set new priorities; keys of items already removed are ignored."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        priorities = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if keys.shape != priorities.shape:
            raise ShoalError(f"got {len(priorities)} priorities for {len(keys)} keys; pass one per key")
        self.selector.check(priorities)
        with self._cond:
            slots, live = self.index.lookup(keys)
            self.selector.update(slots[live], priorities[live])

    # -- checkpoint --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to resume: items, keys, selector (RNG included), counters."""
        with self._cond:
            live = self.index.live_slots()
            return {
                "version": STATE_VERSION, "capacity": self.capacity,
                "selector_type": type(self.selector).__name__, "storage_type": type(self.storage).__name__,
                "index": self.index.state(), "storage": self.storage.state(live),
                "selector": self.selector.state(), "rate_limiter": self.rate_limiter.state(),
                "times_sampled": self.times_sampled.copy(), "num_evicted": self.num_evicted,
            }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` into a table built with the same capacity, selector and storage."""
        for field, mine in (("capacity", self.capacity), ("selector_type", type(self.selector).__name__),
                            ("storage_type", type(self.storage).__name__)):
            if state[field] != mine:
                raise ShoalError(f"replay state has {field} {state[field]!r} but table {self.name!r} has {mine!r}; "
                                 "build the table the way it was built when saved")
        with self._cond:
            self.index.load_state(state["index"])
            self.storage.load_state(state["storage"])
            self.selector.bind(self.index)
            self.selector.load_state(state["selector"])
            self.rate_limiter.load_state(state["rate_limiter"])
            self.times_sampled = np.asarray(state["times_sampled"], dtype=np.int64).copy()
            self.num_evicted = int(state["num_evicted"])
            self._cond.notify_all()
