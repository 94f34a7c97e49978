"""A variable source that serves immutable, versioned parameter snapshots.

A learner (or a parameter server) :meth:`publishes <VariableServer.publish>` its state
dict; the server packs it into one flat read-only buffer (see :mod:`shoal.nets.flat`)
tagged with an integer version. Readers ask with the version they hold and get ``None``
when nothing newer exists, so an actor pulling every K unrolls moves the buffer only
when it changed; the version an actor acted with travels with its data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from shoal.errors import ShoalError
from shoal.nets.flat import FlatLayout


@dataclass(frozen=True)
class Snapshot:
    """One published parameter version: a flat read-only buffer and its layout."""

    version: int
    layout: FlatLayout
    buffer: np.ndarray

    def tensors(self) -> dict[str, torch.Tensor]:
        """The state dict as CPU tensors sharing the (read-only) buffer."""
        return self.layout.unpack_tensors(self.buffer)


class VariableServer:
    """Holds the newest snapshot; thread safe; readers never see a half-written version."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._snapshot: Snapshot | None = None
        self._layout: FlatLayout | None = None
        self.num_published = 0
        self.num_served = 0

    @property
    def version(self) -> int:
        """The newest published version (-1 before the first publish)."""
        snap = self._snapshot
        return -1 if snap is None else snap.version

    def publish(self, state: dict[str, torch.Tensor], version: int | None = None) -> Snapshot:
        """Pack ``state`` into a new snapshot (version: the given one, or the previous + 1)."""
        layout = self._layout
        if layout is None or list(layout.names) != list(state):
            layout = FlatLayout.of(state)
        snap = Snapshot(self.version + 1 if version is None else int(version), layout, layout.pack(state))
        with self._lock:
            if self._snapshot is not None and snap.version <= self._snapshot.version:
                raise ShoalError(f"published version {snap.version} is not newer than {self._snapshot.version}; "
                                 "versions must grow")
            self._layout, self._snapshot = layout, snap
            self.num_published += 1
            self._lock.notify_all()
        return snap

    def get(self, newer_than: int = -1, timeout: float | None = 0.0) -> Snapshot | None:
        """The newest snapshot if its version exceeds ``newer_than``, else ``None``.

        ``timeout``: seconds to wait for a newer version (0: answer at once, None: wait for ever).
        """
        with self._lock:
            def fresh() -> bool:
                return self._snapshot is not None and self._snapshot.version > newer_than

            if not fresh() and (timeout is None or timeout > 0):
                self._lock.wait_for(fresh, timeout)
            if not fresh():
                return None
            self.num_served += 1
            return self._snapshot
