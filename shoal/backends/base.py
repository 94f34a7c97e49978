"""The backend interface: start nodes, call their methods, wait for results.

A node is any plain Python class. ``spawn`` places an instance somewhere (this
process, a Ray worker process, another machine) and returns a :class:`NodeHandle`
whose ``call`` returns futures. Futures can be passed as arguments to other calls
(a backend may then move the data directly between nodes) and resolved with
:meth:`Backend.get`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

from shoal.errors import ConfigError, ShoalError


class NodeDied(ShoalError):
    """A node's process ended while a call was in flight (it was killed, or crashed hard).

    A backend that restarts nodes (Ray, with ``max_restarts``) starts a new process for it;
    ``transient`` says the node may still be coming back (calls made while it restarts fail
    the same way), not that it is gone for good.
    """

    def __init__(self, message: str, node: str = "", transient: bool = False) -> None:
        super().__init__(message)
        self.reason = message  # kept apart: a remote caller's re-raise may wrap str() in a traceback
        self.node = node  # the name it was spawned with ("" when unknown)
        self.transient = transient


class DataLost(ShoalError):
    """A value a call returned or took was lost before it was read: the machine (or process) whose object
    store held it is gone, and the backend cannot make it again (a node call is not re-run for its result).

    The caller may run the calls that made the value again; where it cannot, the run stops with this
    error's one line.
    """

    def __init__(self, message: str, node: str = "") -> None:
        super().__init__(message)
        self.node = node  # the node whose call's result could not be read ("" when unknown)


class Future(ABC):
    """The pending result of a node call."""

    @abstractmethod
    def result(self) -> Any:
        """Block until the value is ready and return it."""


class NodeHandle(ABC):
    """A reference to a node placed by a backend."""

    @abstractmethod
    def call(self, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> Any:
        """Call ``method`` on the node; returns a Future (or a tuple of ``num_returns`` futures)."""


class Backend(ABC):
    """Places nodes and moves data between them."""

    name: str = "base"
    #: Whether nodes run at the same time (threads, processes) or one call after another.
    concurrent: bool = False

    @abstractmethod
    def spawn(self, cls: type, *args: Any, name: str = "", num_cpus: float = 1, num_gpus: float = 0,
              concurrency: int = 1, max_restarts: int = 0, actor: bool = False, **kwargs: Any) -> NodeHandle:
        """Create ``cls(*args, **kwargs)`` as a node and return its handle.

        ``concurrency > 1`` asks for a node that serves that many calls at once (a queue, a
        parameter or inference server, whose calls may block); such a node must be thread safe.
        ``max_restarts``: how often a backend whose nodes live in processes of their own (Ray)
        starts a node anew after its process died, with the same arguments (then it calls the
        node's ``on_restart()``, if it has one); a call in flight at the death raises
        :class:`NodeDied`. Backends whose nodes share this process ignore it. ``actor``: the node
        is an actor (it steps envs), placed where a cluster keeps its actors (Ray's
        ``SHOAL_RAY_ACTOR_RESOURCE``) whatever its ``max_restarts``; other nodes stay with the driver.
        """

    def get(self, futures: Future | Sequence[Future]) -> Any:
        """Resolve one future or a list of them (in order)."""
        if isinstance(futures, Future):
            return futures.result()
        return [f.result() for f in futures]

    @abstractmethod
    def wait(self, futures: Sequence[Future], num_returns: int = 1, timeout: float | None = None) -> tuple[list[Future], list[Future]]:
        """Split ``futures`` into ``(ready, not_ready)`` once ``num_returns`` are ready."""

    def put(self, value: Any) -> Future:
        """Store a value once so many calls can share it (a no-op in-process)."""
        return Ready(value)

    def resolve_device(self, name: str) -> str:
        """The learner device a run's ``device`` setting means where this backend places learners.

        ``auto`` becomes ``cuda`` when a GPU is there, else ``cpu``; ``cuda`` without one is an
        error. This default checks this process's torch (learners run here); backends that
        place learners elsewhere (Ray) ask the place instead.
        """
        import torch

        if name == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if name.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ConfigError(f"device={name!r} but this torch build sees no CUDA device; "
                                  "use device=cpu or install a CUDA build of torch")
            index = name.partition(":")[2]
            if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
                raise ConfigError(f"device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                                  "use device=cuda or an index below that")
        return name

    def shutdown(self) -> None:
        """Stop every node this backend started."""


class Ready(Future):
    """A future whose value is already there."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value
