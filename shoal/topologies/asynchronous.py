"""The driver of every asynchronous topology: start calls, collect what finished, never a barrier.

An asynchronous program has actor-like nodes (actors, env workers, agents, A3C workers)
that each run a call of some units of work (unrolls or vector steps), and optionally a
learner node that runs calls of training batches; the nodes feed each other directly
(queues, variable and inference servers). On a concurrent backend (threaded, Ray) the
driver keeps one call outstanding per node, waits for whichever finishes first, reports
it and starts the next. Call sizes adapt so that a call lasts about ``call_seconds``: the
driver makes about one call per second per node whatever the env's speed, and no more
work is started than the run's step budget needs. On the cooperative in-process backend
a subclass runs one fixed, deterministic round instead.
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from typing import Any

import numpy as np
import torch

from shoal.backends.base import NodeDied
from shoal.core.types import ActorReport
from shoal.topologies import IterationReport, Program
from shoal.topologies.nodes import LearnerNode
from shoal.topologies.restarts import ActorRestarts, not_restarted


def copy_tree(tree: Any) -> Any:
    """A copy of a nested state (dicts, lists, tuples) with every tensor and array copied too.

    A node serving calls concurrently hands out its state this way: the caller serialises it
    later, while the node goes on updating its tensors in place.
    """
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone()
    if isinstance(tree, np.ndarray):
        return tree.copy()
    if isinstance(tree, dict):
        out = {k: copy_tree(v) for k, v in tree.items()}
        return out if type(tree) is dict else type(tree)(out)  # keeps markers such as Detachable
    if isinstance(tree, (list, tuple)):
        items = [copy_tree(v) for v in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)  # namedtuples too
    return tree


class SharedLearnerNode(LearnerNode):
    """A learner node that serves calls (variables, state) while other calls update it.

    Updates and reads take ``_lock``; the state is a copy taken between two updates, so a
    checkpoint never mixes two versions however the node is served. ``COUNTERS`` name the
    integer attributes kept with the state; after a load, :meth:`_restored` republishes.
    """

    COUNTERS: tuple[str, ...] = ()

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self._lock = threading.RLock()
        for name in self.COUNTERS:
            setattr(self, name, 0)

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        with self._lock:
            return self.learner.get_variables()

    def state(self) -> dict[str, Any]:
        with self._lock:
            s = copy_tree(super().state())
            s.update({name: getattr(self, name) for name in self.COUNTERS})
            return s

    def load_state(self, state: dict[str, Any]) -> None:
        with self._lock:
            super().load_state(state)
            for name in self.COUNTERS:
                setattr(self, name, int(state.get(name, 0)))
            self._restored()

    def _restored(self) -> None:
        """Make the restored version available to readers."""


def idle_report(call_s: float, idle_s: float, blocked_s: float, env_restarts: int) -> dict[str, float]:
    """What an actor-like node reports of one call besides its episodes.

    ``actor_idle_frac``: the share of the call spent neither stepping envs nor held back by a
    full queue or a rate limiter (waiting for parameters, actions, or a hand-over);
    ``actor_backpressure_frac``: the share spent waiting for room (the learner is behind);
    ``env_restarts``: how often the node's env raised and was made anew during the call.
    """
    scale = 1.0 / call_s if call_s > 0 else 0.0
    return {"actor_idle_frac": idle_s * scale, "actor_backpressure_frac": blocked_s * scale,
            "env_restarts": float(env_restarts)}


def actor_critic_misfit(builder: Any) -> str | None:
    """Why a topology carrying actor-critic rollouts (impala, seed, ga3c) cannot run ``builder``'s algorithm."""
    if builder.local_only:
        return str(builder.local_only)
    if not builder.rollout_actor_critic:
        return "it carries actor-critic rollouts with behaviour log-probs; use ppo, a2c, impala, appo, a3c or ga3c"
    return None


class AsyncProgram(Program):
    """Outstanding calls per node, adaptive call sizes, reports of whatever finished."""

    #: Target duration of one driver call on a concurrent backend.
    call_seconds: float = 1.0
    #: Longest the driver waits for any call before it reports an empty round.
    wait_timeout_s: float = 60.0

    def _init_async(self, backend: Any, num_actors: int, steps_per_unit: int, total_steps: int,
                    first_units: int, max_restarts: int) -> None:
        """``max_restarts``: deaths each actor node survives (``RunConfig.max_restarts``); spawn the actor
        nodes with :meth:`_spawn_actor` so that the backend restarts them."""
        self.backend = backend
        self.restarts = ActorRestarts(num_actors, max_restarts, self.restart_timeout_s)
        self._env_restarts = 0  # envs made anew inside actor nodes, in all
        self.concurrent = backend.concurrent
        self.steps_per_unit = max(1, steps_per_unit)  # env steps in one unit of actor work
        self.total_steps = total_steps
        self.env_steps = 0
        self._units = [max(1, first_units)] * num_actors
        self._actor_calls: dict[int, tuple[Any, float, int]] = {}
        self._learner_call: Any = None
        self._extra_at = -float("inf")
        self._learner_rate = 0.0  # learner units per second, measured

    # -- what a topology supplies --------------------------------------------------------------
    @abstractmethod
    def _start_actor(self, i: int, units: int) -> Any:
        """Start actor ``i`` on ``units`` units of work; returns its future (an ActorReport)."""

    def _spawn_actor(self, cls: type, *args: Any, name: str, **options: Any) -> Any:
        """Spawn actor node ``cls(*args)``, restartable (see :mod:`shoal.topologies.restarts`)."""
        return self.restarts.spawn(self.backend, cls, *args, name=name, **options)

    @property
    def node_restarts(self) -> list[int]:
        """Deaths of each actor node so far."""
        return self.restarts.counts

    def _start_learner(self) -> Any:
        """Start a learner call (a future of a metrics dict), or None for topologies without one."""
        return None

    @abstractmethod
    def _cooperative_round(self) -> IterationReport:
        """One deterministic round on the cooperative in-process backend."""

    def _actor_died(self, i: int) -> None:
        """Actor ``i``'s process died inside a call (after :meth:`ActorRestarts.died` counted it)."""

    def _extra_metrics(self) -> dict[str, float]:
        """Metrics from other nodes, added to every report."""
        return {}

    # -- the driver -------------------------------------------------------------------------------
    def run_iteration(self) -> IterationReport:
        if not self.concurrent:
            return self._cooperative_round()
        remaining = max(0, self.total_steps - self.env_steps - self._in_flight_steps())
        now = time.monotonic()
        for i in range(len(self._units)):
            if i not in self._actor_calls and remaining > 0 and self.restarts.may_call(i, now):
                # (no work beyond the step budget; a restarting node is called again after a pause)
                cap = max(1, -(-remaining // (self.steps_per_unit * len(self._units))))
                units = min(self._units[i], cap)
                self._actor_calls[i] = (self._start_actor(i, units), time.monotonic(), units)
                remaining = max(0, remaining - units * self.steps_per_unit)
        if self._learner_call is None:
            self._learner_call = self._start_learner()
        futures = [f for f, _, _ in self._actor_calls.values()] + ([self._learner_call] if self._learner_call is not None else [])
        self.restarts.check_overdue(now)  # a node Ray cannot place again never answers nor fails
        if not futures:  # every node is restarting
            time.sleep(0.1)
            return self._report([], {})
        ready, _ = self.backend.wait(futures, num_returns=1, timeout=min(self.wait_timeout_s, self.restart_timeout_s))
        ready_ids = {id(f) for f in ready}
        reports = []
        for i in [i for i, (f, _, _) in self._actor_calls.items() if id(f) in ready_ids]:
            fut, started, units = self._actor_calls.pop(i)
            try:
                reports.append(self.backend.get(fut))
            except NodeDied as e:
                self.restarts.died(i, e, self.actors[i])  # type: ignore[attr-defined]  # restarted: next call goes to it
                self._actor_died(i)
                continue
            self.restarts.recovered(i)
            took = max(time.monotonic() - started, 1e-3)
            self._units[i] = int(np.clip(units * self.call_seconds / took, 1, 100_000))
        metrics: dict[str, float] = {}
        if self._learner_call is not None and id(self._learner_call) in ready_ids:
            try:
                metrics = self.backend.get(self._learner_call) or {}  # reported once, when fresh
            except NodeDied as e:
                raise not_restarted(e) from None
            self._learner_call = None
        return self._report(reports, metrics)

    #: Longest an actor node may take to come back after it died.
    restart_timeout_s: float = 120.0

    def _in_flight_steps(self) -> int:
        return sum(units * self.steps_per_unit for _, _, units in self._actor_calls.values())

    def _report(self, reports: list[ActorReport], metrics: dict[str, float]) -> IterationReport:
        steps = sum(r.env_steps for r in reports)
        self.env_steps += steps
        now = time.monotonic()
        if not self.concurrent or now - self._extra_at >= self.call_seconds:  # other nodes' metrics: at most one call per call_seconds
            metrics = dict(metrics, **self._extra_metrics())
            self._extra_at = now
        data = [r.data for r in reports if isinstance(r.data, dict)]
        for key in ("actor_idle_frac", "actor_backpressure_frac"):
            values = [d[key] for d in data if key in d]
            if values:
                metrics[key] = float(np.mean(values))
        self._env_restarts += sum(int(d.get("env_restarts", 0)) for d in data)  # each call reports its own
        metrics["env_restarts"] = float(self._env_restarts)
        metrics["actor_restarts"] = float(self.restarts.total)
        return IterationReport(steps, [x for r in reports for x in r.episode_returns],
                               [x for r in reports for x in r.episode_lengths], metrics)

    def _outstanding(self) -> list[Any]:
        return [f for f, _, _ in self._actor_calls.values()] + ([self._learner_call] if self._learner_call is not None else [])

    def _release(self) -> None:
        """Unblock nodes waiting on each other before the calls are awaited (e.g. close a queue)."""

    def close(self) -> None:
        """Release blocked nodes, let outstanding calls end, stop every node."""
        try:
            try:
                self._release()
            except NodeDied:  # a dead node holds no one back (and its death is already being reported)
                pass
            pending = self._outstanding()
            if pending:
                self.backend.wait(pending, num_returns=len(pending), timeout=60.0)
        finally:
            self._actor_calls.clear()
            self._learner_call = None
            self.backend.shutdown()

    # -- checkpoints ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The learner's state (after its current call) and the driver's counters.

        On concurrent backends the actors keep running while the checkpoint is taken, so
        their state (sampling generators, and their reward normalisers' statistics: with
        ``normalize_reward`` each actor scales by its own running statistics) is not in it: a
        resumed run's actors start fresh episodes from new derived seeds and fresh statistics,
        and data still queued between nodes is not kept. The learner node hands out a copy
        taken between two updates.
        """
        learner_state = self.backend.get(self.learner.call("state"))  # type: ignore[attr-defined]
        actors = self.actors if not self.concurrent and self._actor_state_kept() else []  # type: ignore[attr-defined]
        return {"learner": learner_state["learner"],
                "learner_node": {k: v for k, v in learner_state.items() if k != "learner"},
                "actors": self.backend.get([a.call("state") for a in actors]), "env_steps": self.env_steps}

    def _actor_state_kept(self) -> bool:
        """Whether the actor nodes have state worth checkpointing (cooperative mode)."""
        return True

    def load_state(self, state: dict[str, Any]) -> None:
        node_state = dict(state["learner_node"])
        node_state["learner"] = state["learner"]
        self.backend.get(self.learner.call("load_state", node_state))  # type: ignore[attr-defined]
        actors = self.actors  # type: ignore[attr-defined]
        if state["actors"] and len(state["actors"]) == len(actors):
            self.backend.get([a.call("load_state", s) for a, s in zip(actors, state["actors"])])
        self.env_steps = int(state["env_steps"])
