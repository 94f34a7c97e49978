"""Where a table keeps its items: preallocated numpy arrays indexed by slot.

An item is a dict of arrays; a batch of items is the same dict with a leading item axis.
The table decides which slot each item goes to; a storage only writes and reads slots.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from shoal.errors import ShoalError

#: Field name -> (per-item shape, dtype).
Spec = dict[str, tuple[tuple[int, ...], np.dtype]]


def batch_size(items: dict[str, np.ndarray]) -> int:
    """Number of items in a batch; raises if the fields disagree or the batch is empty."""
    if not items:
        raise ShoalError("cannot store an item with no fields; pass a dict of arrays with a leading item axis")
    sizes = {k: np.shape(v)[0] if np.ndim(v) else -1 for k, v in items.items()}
    if len(set(sizes.values())) != 1 or -1 in sizes.values():
        raise ShoalError(f"item fields must share one leading item axis, got lengths {sizes}; "
                         "stack each field over the items of the batch")
    return next(iter(sizes.values()))


def spec_of(items: dict[str, np.ndarray]) -> Spec:
    """The per-item spec of a batch of items."""
    return {k: (tuple(np.shape(v)[1:]), np.asarray(v).dtype) for k, v in items.items()}


class Storage(ABC):
    """Holds the items of one table, one per slot.

    Inserting is two steps so that a storage whose room is not counted in items (shared
    frames) can ask the table to evict first: :meth:`prepare` returns a plan and
    :meth:`shortfall` says how many more items the table should evict before
    :meth:`write` can store that plan.
    """

    capacity: int

    def prepare(self, items: dict[str, np.ndarray]) -> Any:
        """Check ``items`` and turn them into what :meth:`write` stores."""
        return items

    def shortfall(self, plan: Any) -> int:
        """How many more items must be evicted before ``plan`` fits (0 when it fits)."""
        return 0

    @abstractmethod
    def write(self, slots: np.ndarray, plan: Any) -> None:
        """Store the planned items in ``slots``."""

    @abstractmethod
    def read(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the items in ``slots`` (leading axis = ``len(slots)``)."""

    def release(self, slots: np.ndarray) -> None:
        """The items in ``slots`` were removed from the table."""

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Bytes held by the preallocated arrays."""

    @abstractmethod
    def state(self, slots: np.ndarray) -> dict[str, Any]:
        """The items in ``slots`` (the live ones) as a dict of arrays."""

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""


class ArrayStorage(Storage):
    """A ring of preallocated numpy arrays, one per field.

    Fields, shapes and dtypes come from ``spec`` or else from the first insert; later
    inserts must match them.
    """

    def __init__(self, capacity: int, spec: Spec | None = None) -> None:
        if capacity < 1:
            raise ShoalError(f"storage capacity must be at least 1, got {capacity}; pass a positive capacity")
        self.capacity = int(capacity)
        self.spec: Spec | None = None
        self.arrays: dict[str, np.ndarray] = {}
        if spec is not None:
            self._allocate({k: (tuple(s), np.dtype(d)) for k, (s, d) in spec.items()})

    def _allocate(self, spec: Spec) -> None:
        self.spec = spec
        self.arrays = {k: np.zeros((self.capacity, *shape), dtype=dtype) for k, (shape, dtype) in spec.items()}

    def prepare(self, items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch_size(items)
        if self.spec is None:
            self._allocate(spec_of(items))
        assert self.spec is not None
        if set(items) != set(self.spec):
            raise ShoalError(f"item fields {sorted(items)} differ from the table's fields {sorted(self.spec)}; "
                             "insert items with the same fields every time")
        for k, (shape, _) in self.spec.items():
            if tuple(np.shape(items[k])[1:]) != shape:
                raise ShoalError(f"field {k!r} has per-item shape {tuple(np.shape(items[k])[1:])}, "
                                 f"the table stores {shape}; insert items of one shape per field")
        return items

    def write(self, slots: np.ndarray, plan: dict[str, np.ndarray]) -> None:
        for k, arr in self.arrays.items():
            arr[slots] = plan[k]

    def read(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        return {k: arr[slots] for k, arr in self.arrays.items()}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def state(self, slots: np.ndarray) -> dict[str, Any]:
        spec = {k: {"shape": list(s), "dtype": np.dtype(d).str} for k, (s, d) in (self.spec or {}).items()}
        return {"spec": spec, "slots": np.array(slots, dtype=np.int64), "fields": self.read(slots)}

    def load_state(self, state: dict[str, Any]) -> None:
        spec = {k: (tuple(v["shape"]), np.dtype(v["dtype"])) for k, v in state["spec"].items()}
        if spec:
            self._allocate(spec)
            self.write(np.asarray(state["slots"], dtype=np.int64), state["fields"])
        else:
            self.spec, self.arrays = None, {}
