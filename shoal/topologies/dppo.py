"""The ``dppo`` topology (Heess et al. 2017): workers compute PPO gradients, a chief averages them synchronously.

Each of N workers has its own envs and network copy. It collects a rollout with the
chief's newest parameters, then takes ``rounds_per_rollout`` synchronous rounds on it: it
computes the PPO gradient (clipped surrogate or adaptive KL penalty, one full-batch pass)
at the current parameters, pushes it tagged with their version, and waits for the
round's new parameters. The chief closes a round as soon as it holds gradients of the
current version from M of the N workers (``min_gradients``): it applies their average,
publishes the new version and wakes the waiting workers. A gradient that arrives after its
round closed (computed on an older version) is late: dropped and counted, per worker. With
the KL penalty each worker reports KL(old || new) on its rollout after its last round and
the chief adapts the penalty coefficient once per policy iteration (``rounds_per_rollout``
updates), from the mean of the first M reports of the iteration (halved below ``kl_target / 1.5``,
doubled above ``1.5 kl_target``), and serves it to the workers; a report measured less than
``rounds_per_rollout`` versions after those of the last adaptation (a straggler of an iteration
already adapted) is late, dropped and counted.

On the cooperative in-process backend a round asks the workers in turn (the order rotates
by one each round); the chief closes the round at the M-th gradient, so the last N - M are
late every round, deterministically.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from shoal.agents.pg.loss import adapt_kl_beta
from shoal.backends.base import Backend, NodeDied
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
from shoal.topologies.asynchronous import AsyncProgram, copy_tree
from shoal.topologies.nodes import ActorNode, LearnerNode, NodeContext
from shoal.topologies.restarts import not_restarted


@dataclass
class DPPOSettings:
    """The topology's own settings."""

    rounds_per_rollout: int = 10
    """Synchronous gradient rounds on each rollout (PPO's epochs, each one averaged over the workers)."""
    min_gradients: int = 0
    """M: gradients of the current version the chief averages per round; later ones are dropped (0: N - 1, at least 1)."""
    round_timeout_s: float = 30.0
    """Longest a worker waits for its round; then the chief closes it with the gradients it has."""
    rollouts_per_call: int = 1
    """Rollouts in a worker's first call on concurrent backends (later calls adapt to last about a second)."""

    def __post_init__(self) -> None:
        positive(self, "rounds_per_rollout", "round_timeout_s", "rollouts_per_call")
        if self.min_gradients < 0:
            raise ConfigError(f"min_gradients must be >= 0 (0: all workers but one), got {self.min_gradients}")

    def required(self, num_workers: int) -> int:
        """M for ``num_workers`` workers."""
        m = self.min_gradients or num_workers - 1
        if m > num_workers:
            raise ConfigError(f"min_gradients={m} exceeds the {num_workers} workers; use at most num_actors")
        return max(1, m)


class ChiefNode(LearnerNode):
    """Holds the parameters and optimiser; averages the first M gradients of each round; serves snapshots."""

    def __init__(self, ctx: NodeContext, num_workers: int, settings: DPPOSettings) -> None:
        super().__init__(ctx)
        if not hasattr(self.learner, "apply_gradients"):
            raise ConfigError(f"the dppo topology needs a learner that applies gradients computed elsewhere; "
                              f"{ctx.algo} has none (use dppo or ppo)")
        self.settings = settings
        self.num_workers = num_workers
        self.m = settings.required(num_workers)
        self._cond = threading.Condition()
        self.variables = VariableServer()
        self.round: dict[int, np.ndarray] = {}  # worker id -> its gradient of the current version
        # Workers inside a call (concurrent backends): a round never waits for more than these. A set of ids: a
        # worker whose process died inside its call never left, and its restarted process joins as the same one.
        self.active: set[int] = set()
        self.released = False
        self.pending_env_steps = 0
        self.rounds = 0
        self.late = [0] * num_workers
        self.accepted = [0] * num_workers
        self.learner_env_steps = 0
        self.kls: list[float] = []
        self.last_kl = 0.0
        self.kl_adapted_at: int | None = None  # the oldest version the last adaptation's reports were measured on
        self._kl_measured: int | None = None  # the oldest version the reports gathered since were measured on
        self.late_kl = 0
        self._publish()

    def _publish(self) -> None:
        version, state = self.learner.get_variables()
        self.variables.publish(state, version)

    @property
    def version(self) -> int:
        return int(self.learner.version)

    def _needed(self) -> int:
        return min(self.m, len(self.active)) if self.active else self.m

    def _close(self) -> None:
        """Apply the mean of the round's gradients as one update and publish the new version."""
        grads = list(self.round.values())
        mean = torch.from_numpy(np.mean(np.stack(grads), axis=0).astype(np.float32))
        before = self.version
        cast(GradientLearner, self.learner).apply_gradients(mean, self.pending_env_steps)  # checked in __init__
        self.learner_env_steps += self.pending_env_steps
        self.pending_env_steps = 0
        self.round.clear()
        self.rounds += 1
        self.learner_steps += 1
        if self.version != before:  # a skipped (non-finite) mean gradient made no new version to publish
            self._publish()
        self._cond.notify_all()

    def join(self, worker_id: int) -> None:
        """Worker ``worker_id`` starts a call (rounds may wait for it)."""
        with self._cond:
            self.active.add(int(worker_id))

    def leave(self, worker_id: int) -> None:
        """Worker ``worker_id`` ends its call: a round waiting on fewer workers closes if it has enough."""
        with self._cond:
            self.active.discard(int(worker_id))
            if self.round and len(self.round) >= self._needed():
                self._close()

    def push(self, grad: np.ndarray, base_version: int, worker_id: int, env_steps: int,
             wait: bool = False) -> dict[str, float]:
        """Add a gradient computed on ``base_version`` to the current round, or drop it as late.

        ``wait``: block until the round closes (at most ``round_timeout_s``, after which the
        chief closes it with the gradients it has). Returns whether it was accepted and the
        chief's version after.
        """
        with self._cond:
            self.pending_env_steps += int(env_steps)
            if base_version != self.version or worker_id in self.round:
                self.late[worker_id] += 1
                return {"accepted": 0.0, "version": float(self.version)}
            self.round[worker_id] = np.array(grad, dtype=np.float32, copy=True)  # Ray's arrays are read-only
            self.accepted[worker_id] += 1
            if len(self.round) >= self._needed():
                self._close()
            elif wait:  # until this round closes (a skipped update closes it too, with no new version)
                joined = self.rounds
                done = self._cond.wait_for(lambda: self.rounds > joined or self.version != base_version
                                           or self.released, self.settings.round_timeout_s)
                if not done and self.rounds == joined and self.round:
                    self._close()
            return {"accepted": 1.0, "version": float(self.version)}

    def pull(self, newer_than: int) -> Any:
        """``(version, reference)`` of the newest snapshot if newer than ``newer_than`` (else None)."""
        return self.variables.get_ref(newer_than)

    def progress(self) -> dict[str, float]:
        """What workers need besides the parameters: the KL penalty coefficient and the env steps learned from."""
        ac: Any = self.learner  # an actor-critic learner
        with self._cond:
            return {"kl_beta": float(ac.beta), "env_steps": float(ac.env_steps)}

    def report_kl(self, kl: float, version: int | None = None) -> bool:
        """A worker's KL(old || new) on its rollout after its last round, measured on parameter ``version``
        (None: the chief's now); whether it counted.

        A worker's rollout spans ``rounds_per_rollout`` versions at least (each of its rounds waits for a new
        one), so reports of the next iteration are measured that many versions after the oldest of the last
        adaptation's.
        The first M of them adapt the penalty once, by their mean; a report measured sooner belongs to an
        iteration already adapted and is late (dropped, counted). So one policy iteration adapts the penalty
        once however many of its N workers report.
        """
        with self._cond:
            measured = self.version if version is None else int(version)
            if self.kl_adapted_at is not None and measured < self.kl_adapted_at + self.settings.rounds_per_rollout:
                self.late_kl += 1
                return False
            self.kls.append(float(kl))
            self._kl_measured = measured if self._kl_measured is None else min(measured, self._kl_measured)
            if len(self.kls) >= self._needed():
                self.last_kl = float(np.mean(self.kls))
                self.kls.clear()
                self.kl_adapted_at, self._kl_measured = self._kl_measured, None
                ac: Any = self.learner  # an actor-critic learner
                if ac.cfg.loss == "kl_penalty":
                    ac.beta = adapt_kl_beta(ac.beta, self.last_kl, ac.cfg.kl_target)
            return True

    def release(self) -> None:
        """Stop waiting for rounds (the program is closing)."""
        with self._cond:
            self.released = True
            self._cond.notify_all()

    def metrics(self) -> dict[str, float]:
        with self._cond:
            return {"late_gradients": float(sum(self.late)), "late_kl_reports": float(self.late_kl), "rounds": float(self.rounds),
                    "kl_beta": float(getattr(self.learner, "beta", 0.0)), "kl": self.last_kl,
                    "learner_env_steps": float(self.learner_env_steps), "learner_steps": float(self.learner_steps)}

    def late_by_worker(self) -> list[int]:
        """Late (dropped) gradients of each worker."""
        with self._cond:
            return list(self.late)

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        with self._cond:
            return self.learner.get_variables()

    def state(self) -> dict[str, Any]:
        """A copy taken between two rounds."""
        with self._cond:
            s = copy_tree(super().state())
            s.update(learner_env_steps=self.learner_env_steps, late=list(self.late), accepted=list(self.accepted),
                     rounds=self.rounds)
            return s

    def load_state(self, state: dict[str, Any]) -> None:
        with self._cond:
            super().load_state(state)
            self.learner_env_steps = int(state.get("learner_env_steps", 0))
            self.rounds = int(state.get("rounds", 0))
            if len(state.get("late", [])) == self.num_workers:
                self.late, self.accepted = [int(x) for x in state["late"]], [int(x) for x in state["accepted"]]
            self.round.clear()
            self.kls.clear()
            self.kl_adapted_at = self._kl_measured = None  # reports of the restored run's next iteration count
            self.variables = VariableServer()
            self._publish()


class DPPOWorkerNode(ActorNode):
    """Envs, an actor and a local learner sharing one network copy: rollout, then synchronous gradient rounds."""

    def __init__(self, ctx: NodeContext, worker_id: int, num_workers: int, env_seed: int, actor_seed: int,
                 chief: Any, rounds: int) -> None:
        super().__init__(ctx, worker_id, num_workers, env_seed, actor_seed)
        net = getattr(self.actor, "net", None)
        if net is None:
            raise ConfigError(f"the dppo topology needs an actor-critic algorithm; {ctx.algo} is not one")
        self.net = net
        self.local: Any = self.builder.make_learner(net, {})  # computes gradients; the chief applies them
        self.chief = chief
        self.rounds = rounds
        self.version = -1
        self.rollout: Any = None
        self._new_steps = 0
        self.steps_done = 0

    def sync(self) -> None:
        """Adopt the chief's newest parameters if newer than those held."""
        ref = self.chief.call("pull", self.version).result()
        if ref is not None:
            snap = store.get(ref[1])
            self.actor.load_variables(snap.version, snap.tensors())
            self.version = snap.version

    def collect(self) -> ActorReport:
        """Run a rollout with the newest parameters; it is kept for the rounds that follow."""
        self.sync()
        report, self.rollout = self.run(self.builder.steps_per_iteration)
        p = self.chief.call("progress").result()
        self.local.beta, self.local.env_steps = p["kl_beta"], int(p["env_steps"])  # the chief's penalty and schedules
        self._new_steps = report.env_steps
        self.steps_done += report.env_steps
        return report

    def gradient(self, wait: bool) -> dict[str, float]:
        """Compute the gradient at the held parameters and push it; with ``wait``, adopt the round's result."""
        grad, m = self.local.compute_gradients(self.rollout)
        out = self.chief.call("push", grad.numpy(), self.version, self.actor_id, self._new_steps, wait).result()
        self._new_steps = 0  # a rollout's env steps travel with its first gradient
        if wait:
            self.sync()
        return {**m, **out}

    def finish(self) -> float:
        """After a rollout's last round: report KL(old || new) on it to the chief; the KL."""
        self.sync()
        r = self.rollout
        obs, old = r.tensor("obs"), r.tensor("policy_params")
        n = obs.shape[0] * obs.shape[1]
        with torch.no_grad():
            params, _ = self.net(obs.reshape(n, *obs.shape[2:]))
            kl = float(self.net.dist.kl(old.reshape(n, *old.shape[2:]), params).mean())
        self.chief.call("report_kl", kl, self.version).result()
        return kl

    def work(self, num_rollouts: int) -> ActorReport:
        """``num_rollouts`` times: a rollout, ``rounds`` synchronous gradient rounds, the KL report."""
        steps, returns, lengths, outcomes = 0, [], [], []
        self.chief.call("join", self.actor_id).result()
        try:
            for _ in range(num_rollouts):
                report = self.collect()
                for _ in range(self.rounds):
                    outcomes.append(self.gradient(wait=True))
                self.finish()
                steps += report.env_steps
                returns += report.episode_returns
                lengths += report.episode_lengths
        finally:
            self.chief.call("leave", self.actor_id).result()
        return ActorReport(steps, returns, lengths, data={"outcomes": outcomes}, actor_id=self.actor_id)


class DPPOProgram(AsyncProgram):
    """DPPO's nodes: N gradient-computing workers and one chief."""

    def __init__(self, ctx: NodeContext, run: RunConfig, backend: Backend, settings: DPPOSettings | None = None) -> None:
        self.ctx = ctx
        self.dppo_settings = s = settings or DPPOSettings()
        self.builder = ctx.builder()
        n = run.num_actors
        self.min_gradients = s.required(n)
        self._init_async(backend, n, self.builder.steps_per_iteration * self.builder.num_envs, run.steps,
                         s.rollouts_per_call, run.max_restarts)
        self.learner = backend.spawn(ChiefNode, ctx, n, s, name="chief", num_gpus=learner_gpus(ctx.device),
                                     concurrency=n + 2 if self.concurrent else 1)
        worker_ctx = dataclasses.replace(ctx, device="cpu")  # workers act and compute gradients on the CPU
        self.env_seeds = [derive_seed(run.seed, "env", i) for i in range(n)]
        self.actor_seeds = [derive_seed(run.seed, "actor", i) for i in range(n)]
        self.actors = [self._spawn_actor(DPPOWorkerNode, worker_ctx, i, n, self.env_seeds[i], self.actor_seeds[i],
                                         self.learner, s.rounds_per_rollout, name=f"worker-{i}")
                       for i in range(n)]
        self._eval_net = self.builder.make_networks()
        self._round_robin = 0

    def _start_actor(self, i: int, units: int) -> Any:
        return self.actors[i].call("work", units)

    def _cooperative_round(self) -> IterationReport:
        get, n = self.backend.get, len(self.actors)
        reports = get([a.call("collect") for a in self.actors])
        outcomes = []
        for _ in range(self.dppo_settings.rounds_per_rollout):
            order = [(self._round_robin + j) % n for j in range(n)]
            self._round_robin += 1
            outcomes += [get(self.actors[i].call("gradient", False)) for i in order]
            get([a.call("sync") for a in self.actors])
        get([a.call("finish") for a in self.actors])
        for j, r in enumerate(reports):
            r.data = {"outcomes": outcomes if j == 0 else []}
        return self._report(reports, {})

    def _actor_died(self, i: int) -> None:
        # it died inside its call and never left: rounds must not wait for it while it restarts
        try:
            self.backend.get(self.learner.call("leave", i))
        except NodeDied as e:
            raise not_restarted(e) from None

    def _extra_metrics(self) -> dict[str, float]:
        return self.backend.get(self.learner.call("metrics"))

    def _release(self) -> None:
        self.backend.get(self.learner.call("release"))

    def _report(self, reports: list[ActorReport], metrics: dict[str, float]) -> IterationReport:
        out = super()._report(reports, metrics)
        outs = [o for r in reports for o in r.data["outcomes"]]
        for k in ("loss_pi", "loss_v", "entropy", "approx_kl", "clip_frac", "grad_norm"):
            vals = [o[k] for o in outs if k in o]
            if vals:
                out.metrics[k] = float(np.mean(vals))
        return out


#: The topology's settings (``topology.KEY=VALUE``; printed under ``topology:`` in config.yaml).
Settings = DPPOSettings


def make_program(ctx: NodeContext, run: RunConfig, backend: Backend, settings: DPPOSettings | None = None) -> DPPOProgram:
    """Build the dppo topology."""
    return DPPOProgram(ctx, run, backend, settings)


def misfit(builder: Any) -> str | None:
    """Why this topology cannot run ``builder``'s algorithm (None: it fits)."""
    if builder.local_only:
        return str(builder.local_only)
    if not builder.rollout_actor_critic:
        return "its workers compute actor-critic gradients; use dppo or ppo"
    if not builder.gradients_as_values:
        return "a pushed gradient is one round: the algorithm needs epochs=1, minibatch_size=0 and normalize_obs=false"
    return None
