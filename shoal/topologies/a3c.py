"""The ``a3c`` topology (Mnih et al. 2016): workers compute gradients, a parameter node applies them.

Each worker has its own envs and its own copy of the network. It pulls the newest
parameters, runs a short rollout, computes the actor-critic gradient on it (without
applying it) and pushes the flat gradient, tagged with the version it was computed
from, to the parameter node, which applies gradients one at a time as they arrive: no
barrier, so a slow worker delays nobody. Gradients computed from parameters more than
``max_staleness`` versions old are dropped and counted (version the parameters, filter
stale gradients).

In-process the workers are nodes like on Ray (threads with their own network copies on
the threaded backend), not Hogwild threads sharing one model: in-place optimiser updates
racing with another thread's forward pass would give torn parameters, and one design runs
unchanged on every backend.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from shoal.backends.base import Backend
from shoal.config import positive
from shoal.core import store
from shoal.core.device import learner_gpus
from shoal.core.interfaces import GradientLearner
from shoal.core.seeding import derive_seed
from shoal.core.types import ActorReport
from shoal.errors import ConfigError
from shoal.services.variables import VariableServer
from shoal.settings import RunConfig
from shoal.topologies import IterationReport
from shoal.topologies.asynchronous import AsyncProgram, SharedLearnerNode
from shoal.topologies.nodes import ActorNode, NodeContext


@dataclass
class A3CSettings:
    """The topology's own settings."""

    max_staleness: int = 16
    """Gradients computed from parameters this many versions older than the newest are dropped."""
    rollouts_per_call: int = 16
    """Rollouts in a worker's first call on concurrent backends (later calls adapt to last about a second)."""

    def __post_init__(self) -> None:
        positive(self, "max_staleness", "rollouts_per_call")


class ParameterNode(SharedLearnerNode):
    """Holds the parameters and the optimiser; applies pushed gradients one at a time; serves snapshots."""

    COUNTERS = ("learner_env_steps", "dropped", "accepted")
    learner_env_steps: int
    dropped: int
    accepted: int

    def __init__(self, ctx: NodeContext, settings: A3CSettings) -> None:
        super().__init__(ctx)
        if not hasattr(self.learner, "apply_gradients"):
            raise ConfigError(f"the a3c topology needs a learner that applies gradients computed elsewhere; "
                              f"{ctx.algo} has none (use a3c or a2c)")
        self.settings = settings
        self.variables = VariableServer()
        self.staleness: list[int] = []
        self._publish()

    def _publish(self) -> None:
        version, state = self.learner.get_variables()
        self.variables.publish(state, version)

    def pull(self, newer_than: int) -> Any:
        """``(version, reference)`` of the newest snapshot if newer than ``newer_than`` (else None)."""
        return self.variables.get_ref(newer_than)

    def push(self, grad: np.ndarray, base_version: int, env_steps: int) -> dict[str, float]:
        """Apply ``grad`` (computed from ``base_version``) unless it is too stale; the outcome and counters."""
        with self._lock:
            staleness = self.learner.version - base_version
            self.staleness.append(staleness)
            if staleness > self.settings.max_staleness:
                self.dropped += 1
                return {"accepted": 0.0, "staleness": float(staleness)}
            # a copy: an array from Ray's object store is read-only
            before = self.learner.version
            m = cast(GradientLearner, self.learner).apply_gradients(torch.tensor(grad), env_steps)  # checked in __init__
            self.learner_steps += 1
            self.accepted += 1
            self.learner_env_steps += env_steps
            if self.learner.version != before:  # a skipped (non-finite) gradient made no new version to publish
                self._publish()
        return {"accepted": 1.0, "staleness": float(staleness), **m}

    def metrics(self) -> dict[str, float]:
        """Staleness since the last call, and the totals."""
        with self._lock:
            st, self.staleness = self.staleness, []
            return {"gradient_staleness": float(np.mean(st)) if st else 0.0, "dropped_gradients": float(self.dropped),
                    "learner_env_steps": float(self.learner_env_steps), "learner_steps": float(self.learner_steps)}

    def _restored(self) -> None:
        self.variables = VariableServer()
        self._publish()


class A3CWorkerNode(ActorNode):
    """Envs, an actor and a local learner sharing one network copy: rollout, gradient, push, pull."""

    def __init__(self, ctx: NodeContext, worker_id: int, num_workers: int, env_seed: int, actor_seed: int,
                 params: Any) -> None:
        super().__init__(ctx, worker_id, num_workers, env_seed, actor_seed)
        self.params = params
        net = getattr(self.actor, "net", None)
        if net is None:
            raise ConfigError(f"the a3c topology needs an actor-critic algorithm; {ctx.algo} is not one")
        # an actor-critic learner (the parameter node checks it applies gradients; this one computes them)
        self.local = cast(GradientLearner, self.builder.make_learner(net, {}))
        self.version = -1
        self.T = self.builder.steps_per_iteration
        self.steps_done = 0

    def work(self, num_rollouts: int) -> ActorReport:
        """``num_rollouts`` times: pull if newer, run a rollout, push its gradient."""
        steps, returns, lengths, grad_norms = 0, [], [], []
        for _ in range(num_rollouts):
            ref = self.params.call("pull", self.version).result()
            if ref is not None:
                snap = store.get(ref[1])
                self.actor.load_variables(snap.version, snap.tensors())
                self.version = snap.version
            report, rollout = self.run(self.T)
            grad, _ = self.local.compute_gradients(rollout)
            outcome = self.params.call("push", grad.numpy(), self.version, report.env_steps).result()
            if "grad_norm" in outcome:
                grad_norms.append(outcome["grad_norm"])
            steps += report.env_steps
            self.steps_done += report.env_steps
            returns += report.episode_returns
            lengths += report.episode_lengths
        # a summary of the pushes, not one entry each: the driver's report stays small however many there were
        data = {"grad_norm_sum": float(sum(grad_norms)), "grad_norm_count": float(len(grad_norms)),
                "env_restarts": float(self.env.take_restarts())}
        return ActorReport(steps, returns, lengths, data=data, actor_id=self.actor_id)


class A3CProgram(AsyncProgram):
    """A3C's nodes: N gradient-computing workers and one parameter node; no barrier on concurrent backends."""

    def __init__(self, ctx: NodeContext, run: RunConfig, backend: Backend, settings: A3CSettings | None = None) -> None:
        self.ctx = ctx
        self.a3c_settings = s = settings or A3CSettings()
        self.builder = ctx.builder()
        n = run.num_actors
        self._init_async(backend, n, self.builder.steps_per_iteration * self.builder.num_envs, run.steps,
                         s.rollouts_per_call, run.max_restarts)
        self.learner = backend.spawn(ParameterNode, ctx, s, name="parameters", num_gpus=learner_gpus(ctx.device),
                                     concurrency=n + 2 if self.concurrent else 1)
        # Workers compute gradients on the CPU, whatever the parameter node's device: their network is
        # the actor's, which acts on the CPU (and a worker has no GPU of its own on Ray).
        worker_ctx = dataclasses.replace(ctx, device="cpu")
        self.actors = [self._spawn_actor(A3CWorkerNode, worker_ctx, i, n, derive_seed(run.seed, "env", i),
                                         derive_seed(run.seed, "actor", i), self.learner, name=f"worker-{i}")
                       for i in range(n)]
        self._eval_net = self.builder.make_networks()

    def _start_actor(self, i: int, units: int) -> Any:
        return self.actors[i].call("work", units)

    def _cooperative_round(self) -> IterationReport:
        reports = [self.backend.get(a.call("work", 1)) for a in self.actors]  # one after the other
        return self._report(reports, {})

    def _extra_metrics(self) -> dict[str, float]:
        return self.backend.get(self.learner.call("metrics"))

    def _report(self, reports: list[ActorReport], metrics: dict[str, float]) -> IterationReport:
        out = super()._report(reports, metrics)
        count = sum(r.data["grad_norm_count"] for r in reports)
        if count:
            out.metrics["grad_norm"] = sum(r.data["grad_norm_sum"] for r in reports) / count
        return out


#: The topology's settings (``topology.KEY=VALUE``; printed under ``topology:`` in config.yaml).
Settings = A3CSettings


def make_program(ctx: NodeContext, run: RunConfig, backend: Backend, settings: A3CSettings | None = None) -> A3CProgram:
    """Build the a3c topology."""
    return A3CProgram(ctx, run, backend, settings)


def misfit(builder: Any) -> str | None:
    """Why this topology cannot run ``builder``'s algorithm (None: it fits)."""
    if builder.local_only:
        return str(builder.local_only)
    if not builder.rollout_actor_critic:
        return "its workers compute actor-critic gradients; use a3c or a2c"
    if not builder.gradients_as_values:
        return "a pushed gradient is one update: the algorithm needs epochs=1, minibatch_size=0 and normalize_obs=false"
    return None
