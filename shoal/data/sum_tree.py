"""A sum tree over numpy arrays: batched updates and batched stratified sampling.

Leaves hold non-negative weights; every inner node holds the sum of its two children,
so the root is the total and a prefix-sum search walks one root-to-leaf path. Batches
are processed one tree level at a time (``O(batch * log capacity)`` numpy work, no
Python loop over the batch). Inner nodes are recomputed from their children rather than
adjusted by differences, so rounding errors do not accumulate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shoal.errors import ShoalError


def check_priorities(p: np.ndarray) -> None:
    """Raise unless every priority is finite and non-negative."""
    ok = np.isfinite(p) & (p >= 0)
    if not ok.all():
        raise ShoalError(f"priorities must be finite and non-negative, got {p[~ok].flat[0]}; "
                         "check the loss that produced them")


class SumTree:
    """Weights for ``capacity`` leaves with O(log n) batched update and sampling."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ShoalError(f"sum tree capacity must be at least 1, got {capacity}; pass a positive capacity")
        self.capacity = int(capacity)
        self.leaves = 1 << max(0, (self.capacity - 1).bit_length())  # power of two >= capacity
        self.depth = self.leaves.bit_length() - 1
        self.nodes = np.zeros(2 * self.leaves, dtype=np.float64)  # node 1 is the root; leaf i is node leaves+i

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def get(self, index: np.ndarray) -> np.ndarray:
        """The weights of the given leaves."""
        return self.nodes[self.leaves + np.asarray(index, dtype=np.int64)]

    def set(self, index: np.ndarray, weight: np.ndarray) -> None:
        """Set leaf weights (non-negative, finite); with repeated indices one of the values wins."""
        index = np.asarray(index, dtype=np.int64)
        weight = np.broadcast_to(np.asarray(weight, dtype=np.float64), index.shape)
        if index.size == 0:
            return
        check_priorities(weight)
        if index.min() < 0 or index.max() >= self.capacity:
            raise ShoalError(f"sum tree index out of range [0, {self.capacity}): {index.min()}..{index.max()}")
        node = self.leaves + index
        self.nodes[node] = weight
        for _ in range(self.depth):
            node = node >> 1  # repeated parents just get the same sum written twice
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf index for each prefix mass in ``[0, total)``: the first leaf whose cumulative sum exceeds it."""
        mass = np.asarray(mass, dtype=np.float64).copy()
        node = np.ones(mass.shape, dtype=np.int64)
        for _ in range(self.depth):
            left = 2 * node
            left_sum = self.nodes[left]
            # Go right when the mass is past the left subtree, unless the right one is empty
            # (possible only through rounding at the very top of the range).
            right = (mass >= left_sum) & (self.nodes[left + 1] > 0)
            mass = np.where(right, mass - left_sum, mass)
            node = left + right
        return node - self.leaves

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` leaves drawn in proportion to their weights, one per equal stratum of the total."""
        return self.sample_batches(1, n, rng)[0]

    def sample_batches(self, num_batches: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """``[num_batches, batch_size]`` leaves: each row is its own stratified draw over the whole total.

        Row ``b`` takes one leaf from each of ``batch_size`` equal strata of the total mass, so
        every batch covers all of the priority mass and batches are independent of each other
        (one tree descent for all of them).
        """
        total = self.total
        if not total > 0:
            raise ShoalError("cannot sample from a sum tree whose weights are all zero; insert items "
                             "with positive priority first")
        mass = (np.arange(batch_size) + rng.random((num_batches, batch_size))) * (total / batch_size)
        return self.find(np.minimum(mass, np.nextafter(total, 0)))

    def state(self) -> dict[str, Any]:
        return {"nodes": self.nodes.copy()}

    def load_state(self, state: dict[str, Any]) -> None:
        nodes = np.asarray(state["nodes"], dtype=np.float64)
        if nodes.shape != self.nodes.shape:
            raise ShoalError(f"sum tree state has {nodes.shape[0] // 2} leaves, this tree {self.leaves}; "
                             "load it into a table of the same capacity")
        self.nodes = nodes.copy()
