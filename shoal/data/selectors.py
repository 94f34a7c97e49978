"""Selectors: which stored items a table samples (and, as a remover, which it evicts).

A selector sees items by slot (the table maps keys to slots). Sampling returns
``(slots, probabilities)``: the probability with which each returned item was drawn,
or 1.0 for the deterministic orders (FIFO, LIFO, heaps), which return distinct items.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from shoal.data.keys import KeyIndex
from shoal.data.sum_tree import SumTree, check_priorities
from shoal.errors import ConfigError, ShoalError


class Selector(ABC):
    """Chooses items to sample. Bound to a table's :class:`KeyIndex` before use."""

    #: True when a sample of n returns n distinct items (so the table must hold at least n).
    distinct: bool = False

    def __init__(self, seed: int | None = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.index: KeyIndex | None = None

    def bind(self, index: KeyIndex) -> None:
        """Attach to the table's slot index (called once by the table)."""
        self.index = index

    def check(self, priorities: np.ndarray) -> None:
        """Raise before anything changes if these priorities cannot be stored."""
        if not np.isfinite(priorities).all():
            raise ShoalError(f"priorities must be finite, got {priorities[~np.isfinite(priorities)][0]}; "
                             "check the loss that produced them")

    def insert(self, slots: np.ndarray, priorities: np.ndarray | None) -> None:
        """New items now live in ``slots``."""

    def remove(self, slots: np.ndarray) -> None:
        """The items in ``slots`` are gone (called before their slots are freed)."""

    def update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        """New priorities for live items (ignored by selectors without priorities)."""

    @abstractmethod
    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(slots, probabilities)`` of ``n`` items; the table ensures enough items are stored."""

    def sample_batches(self, num_batches: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(slots, probabilities)``, each ``[num_batches, batch_size]``: independent samples of ``batch_size``.

        Row ``b`` is drawn as one :meth:`sample` call would draw it (the default makes those
        calls; selectors override it with one vectorised draw of the same distribution).
        """
        draws = [self.sample(batch_size) for _ in range(num_batches)]
        return np.stack([d[0] for d in draws]), np.stack([d[1] for d in draws])

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


class Uniform(Selector):
    """Every stored item equally likely (sampling with replacement)."""

    def bind(self, index: KeyIndex) -> None:
        super().bind(index)
        self.dense = np.zeros(index.capacity, dtype=np.int64)  # live slots, packed at the front
        self.where = np.full(index.capacity, -1, dtype=np.int64)  # slot -> position in dense
        self.count = 0

    def insert(self, slots: np.ndarray, priorities: np.ndarray | None) -> None:
        k = len(slots)
        self.dense[self.count:self.count + k] = slots
        self.where[slots] = np.arange(self.count, self.count + k)
        self.count += k

    def remove(self, slots: np.ndarray) -> None:
        slots = np.unique(slots)
        slots = slots[self.where[slots] >= 0]
        k = len(slots)
        if k == 0:
            return
        end = self.count - k
        holes = np.sort(self.where[slots])
        holes = holes[holes < end]  # removed items in the kept region leave holes ...
        tail = self.dense[end:self.count]
        movers = tail[self.where[tail] >= 0]
        movers = movers[~np.isin(movers, slots)]  # ... filled by the surviving items of the tail
        self.dense[holes] = movers
        self.where[movers] = holes
        self.where[slots] = -1
        self.count = end

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        pick = self.rng.integers(0, self.count, n)
        return self.dense[pick], np.full(n, 1.0 / self.count)

    def sample_batches(self, num_batches: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        # Draws with replacement are independent, so one draw of all items splits into independent batches.
        slots, probs = self.sample(num_batches * batch_size)
        return slots.reshape(num_batches, batch_size), probs.reshape(num_batches, batch_size)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "dense": self.dense[:self.count].copy()}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        assert self.index is not None
        self.bind(self.index)
        self.insert(np.asarray(state["dense"], dtype=np.int64), None)


class Prioritized(Selector):
    """Items drawn with probability ``p_i**alpha / sum_j p_j**alpha`` from a sum tree.

    New items without a priority get the largest priority seen so far (1.0 at first),
    so each is likely to be replayed once before its priority is known.
    """

    def __init__(self, alpha: float = 0.6, seed: int | None = 0) -> None:
        super().__init__(seed)
        if not alpha >= 0:
            raise ConfigError(f"priority exponent alpha must be >= 0, got {alpha}; use 0 for uniform, 0.6 as in PER")
        self.alpha = float(alpha)
        self.max_priority = 1.0

    def bind(self, index: KeyIndex) -> None:
        super().bind(index)
        self.tree = SumTree(index.capacity)

    def _set(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        priorities = np.asarray(priorities, dtype=np.float64)
        if priorities.shape != np.shape(slots):
            raise ShoalError(f"got {priorities.shape} priorities for {len(slots)} items; pass one per item")
        check_priorities(priorities)
        if len(priorities):
            self.max_priority = max(self.max_priority, float(priorities.max()))
        self.tree.set(slots, priorities ** self.alpha)

    def check(self, priorities: np.ndarray) -> None:
        check_priorities(priorities)

    def insert(self, slots: np.ndarray, priorities: np.ndarray | None) -> None:
        self._set(slots, np.full(len(slots), self.max_priority) if priorities is None else priorities)

    def remove(self, slots: np.ndarray) -> None:
        self.tree.set(slots, np.zeros(len(slots)))

    def update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        self._set(slots, priorities)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        slots = self.tree.sample(n, self.rng)
        return slots, self.tree.get(slots) / self.tree.total

    def sample_batches(self, num_batches: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        # Each batch is its own stratified draw over the whole priority mass (not one stratum of a larger draw).
        slots = self.tree.sample_batches(num_batches, batch_size, self.rng)
        return slots, self.tree.get(slots) / self.tree.total

    def state(self) -> dict[str, Any]:
        return {**super().state(), "tree": self.tree.state(), "max_priority": self.max_priority}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.tree.load_state(state["tree"])
        self.max_priority = float(state["max_priority"])


class Fifo(Selector):
    """The oldest items first (a queue when the table removes sampled items)."""

    distinct = True

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.index is not None
        return self.index.oldest(n), np.ones(n)


class Lifo(Selector):
    """The newest items first (a stack when the table removes sampled items)."""

    distinct = True

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.index is not None
        return self.index.newest(n), np.ones(n)
