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
from typing import Any

import numpy as np
import torch

from shoal.core import store
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


def make_snapshot(state: dict[str, torch.Tensor], version: int, like: Snapshot | None = None) -> Snapshot:
    """Pack ``state`` into a snapshot (reusing ``like``'s layout when the tensors are laid out alike)."""
    layout = like.layout if like is not None else None
    if layout is None or layout.names != tuple(state) or layout.shapes != tuple(tuple(t.shape) for t in state.values()):
        layout = FlatLayout.of(state)
    return Snapshot(int(version), layout, layout.pack(state))


class VariableServer:
    """Holds the newest snapshot; thread safe; readers never see a half-written version.

    A publisher in this process calls :meth:`publish`; a publisher elsewhere packs the
    snapshot itself, stores it once (:func:`shoal.core.store.put`) and hands over only the
    reference with :meth:`publish_ref`, so the buffer is never copied through the server.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._version = -1
        self._ref: Any = None  # (a reference to) the newest snapshot
        self._last: Snapshot | None = None  # the newest snapshot packed here, for its layout
        self.num_published = 0
        self.num_served = 0

    @property
    def version(self) -> int:
        """The newest published version (-1 before the first publish)."""
        return self._version

    def publish(self, state: dict[str, torch.Tensor], version: int | None = None) -> Snapshot:
        """Pack ``state`` into a new snapshot (version: the given one, or the previous + 1) and store it once."""
        snap = make_snapshot(state, self._version + 1 if version is None else int(version), self._last)
        with self._lock:
            if snap.version <= self._version:
                raise ShoalError(f"published version {snap.version} is not newer than {self._version}; versions must grow")
            self._last = snap
            self._adopt(snap.version, store.put(snap))
        return snap

    def publish_ref(self, version: int, boxed_ref: tuple[Any], replace: bool = False) -> bool:
        """Adopt a snapshot another node stored: ``boxed_ref`` is ``(reference,)`` (boxed, so that no backend
        resolves it on the way). A version older than the newest is ignored (False), as is an equal one
        unless ``replace`` (a learner restored from a checkpoint republishing its version)."""
        with self._lock:
            if version < self._version or (version == self._version and not replace):
                return False
            self._adopt(int(version), boxed_ref[0])
            return True

    def _adopt(self, version: int, ref: Any) -> None:
        self._version, self._ref = version, ref
        self.num_published += 1
        self._lock.notify_all()

    def get(self, newer_than: int = -1, timeout: float | None = 0.0) -> Snapshot | None:
        """The newest snapshot if its version exceeds ``newer_than``, else ``None``.

        ``timeout``: seconds to wait for a newer version (0: answer at once, None: wait for ever).
        """
        ref = self.get_ref(newer_than, timeout)
        return None if ref is None else store.get(ref[1])

    def get_ref(self, newer_than: int = -1, timeout: float | None = 0.0) -> tuple[int, Any] | None:
        """``(version, reference)`` of the newest snapshot if newer than ``newer_than``, else ``None``.

        The reference is small: remote readers resolve it with :func:`shoal.core.store.get`, so a
        version is stored once and read from shared memory by every reader.
        """
        with self._lock:
            def fresh() -> bool:
                return self._version > newer_than

            if not fresh() and (timeout is None or timeout > 0):
                self._lock.wait_for(fresh, timeout)
            if not fresh():
                return None
            self.num_served += 1
            return self._version, self._ref


class Publisher:
    """A learner's side of a variable server elsewhere: pack each new version here, store it once,
    and hand the server only its reference (not waited for: a version older than the server's
    newest is ignored there)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self._last: Snapshot | None = None

    def publish(self, version: int, state: dict[str, torch.Tensor], restored: bool = False) -> None:
        """Publish ``state`` as ``version``; ``restored``: a learner loaded from a checkpoint republishing it."""
        self._last = make_snapshot(state, version, self._last)
        self.server.call("publish_ref", version, (store.put(self._last),), restored)


def pull_snapshot(server: Any, held: int) -> Snapshot | None:
    """The server's newest snapshot if newer than version ``held`` (None otherwise); one small call
    to the server, then the buffer from the object store."""
    ref = server.call("get_ref", held).result()
    return None if ref is None else store.get(ref[1])
