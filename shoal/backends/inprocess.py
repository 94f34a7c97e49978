"""The default backend: every node is an object in this process, calls run when made.

Deterministic and free of start-up cost; async topologies run as a cooperative loop
(each call completes before the next starts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from shoal.backends.base import Backend, Future, NodeHandle, Ready


@dataclass(frozen=True)
class Placement:
    """The resources a node was spawned with."""

    name: str
    cls: type
    num_cpus: float
    num_gpus: float


def _resolve(x: Any) -> Any:
    return x.result() if isinstance(x, Future) else x


class InProcessHandle(NodeHandle):
    """Calls the node's method right away."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def call(self, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> Any:
        args = tuple(_resolve(a) for a in args)
        kwargs = {k: _resolve(v) for k, v in kwargs.items()}
        out = getattr(self.node, method)(*args, **kwargs)
        if num_returns == 1:
            return Ready(out)
        return tuple(Ready(v) for v in out)


class InProcessBackend(Backend):
    """Places every node in the calling process."""

    name = "inprocess"

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.placements: list[Placement] = []

    def spawn(self, cls: type, *args: Any, name: str = "", num_cpus: float = 1, num_gpus: float = 0,
              concurrency: int = 1, max_restarts: int = 0, actor: bool = False, **kwargs: Any) -> NodeHandle:
        # Resources are not reserved in one process, but recorded: what a node asked for is
        # what it would get on Ray.
        self.placements.append(Placement(name or cls.__name__, cls, float(num_cpus), float(num_gpus)))
        node = cls(*args, **kwargs)
        self.nodes.append(node)
        return InProcessHandle(node)

    def wait(self, futures: Sequence[Future], num_returns: int = 1, timeout: float | None = None) -> tuple[list[Future], list[Future]]:
        return list(futures), []

    def shutdown(self) -> None:
        for node in self.nodes:
            close = getattr(node, "close", None)
            if callable(close):
                close()
        self.nodes.clear()
