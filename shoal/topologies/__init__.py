"""Topologies: where the pieces of an algorithm run and how they talk.

A topology is a function ``(ctx, run_config, backend) -> Program``. A Program runs
iterations and reports progress; it knows nothing about losses.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

from shoal.core.interfaces import Policy
from shoal.errors import ConfigError


@dataclass
class IterationReport:
    """What one iteration of a program did."""

    env_steps: int
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


class Program(ABC):
    """A placed, running set of nodes."""

    @abstractmethod
    def run_iteration(self) -> IterationReport:
        """Run one round (collect and learn) and report it."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Checkpointable state of every node; must hold ``learner.networks``."""

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""

    # Programs hold ``backend``, ``builder``, a ``learner`` node handle and ``_eval_net``
    # (a local copy of the networks) for the two methods below.

    def eval_policy(self) -> Policy:
        """A deterministic policy with the learner's latest parameters, for evaluation in this process."""
        _, sd = self.backend.get(self.learner.call("get_variables"))  # type: ignore[attr-defined]
        self._eval_net.load_state_dict(sd)  # type: ignore[attr-defined]
        return self.builder.make_policy(self._eval_net, evaluation=True)  # type: ignore[attr-defined]

    def close(self) -> None:
        """Stop the program's nodes."""
        self.backend.shutdown()  # type: ignore[attr-defined]


TOPOLOGIES: dict[str, str] = {
    "local": "shoal.topologies.local",
    "apex": "shoal.topologies.apex",
    "impala": "shoal.topologies.impala",
    "seed": "shoal.topologies.seed",
    "a3c": "shoal.topologies.a3c",
    "ga3c": "shoal.topologies.ga3c",
    "gorila": "shoal.topologies.gorila",
    "dppo": "shoal.topologies.dppo",
    "alphazero": "shoal.topologies.alphazero",
    "offline": "shoal.topologies.offline",
}


def _module(name: str) -> Any:
    try:
        path = TOPOLOGIES[name]
    except KeyError:
        raise ConfigError(f"unknown topology {name!r}; use one of {sorted(TOPOLOGIES)}") from None
    return importlib.import_module(path)


def get_topology(name: str) -> Callable[..., Program]:
    """The ``make_program(ctx, run, backend, settings=None)`` function of topology ``name``."""
    return _module(name).make_program


def topology_settings(name: str) -> type | None:
    """The dataclass of topology ``name``'s own settings (None: it has none)."""
    return getattr(_module(name), "Settings", None)


def multi_learner(name: str) -> bool:
    """Whether topology ``name`` can run a group of learners averaging gradients (``num_learners > 1``)."""
    return bool(getattr(_module(name), "MULTI_LEARNER", False))


def misfit(name: str, builder: Any) -> str | None:
    """Why topology ``name`` cannot run the algorithm ``builder`` builds, or None when it fits."""
    if builder.offline and name != "offline":  # a dataset, no actors: only the offline topology
        return "it learns from a dataset with no actors; it runs on the offline topology"
    fits = getattr(_module(name), "misfit", None)
    return None if fits is None else fits(builder)
