"""The ``impala`` topology: actors with a lagged policy feed a learner through a queue.

Nodes (Espeholt et al. 2018, IMPALA): N actor nodes step their envs with the newest
parameters they pulled, and push fixed-length unrolls (with their behaviour log-probs and
the parameter version they acted with) into a bounded trajectory queue node; the learner
node takes batches of unrolls from the queue, corrects the policy lag with V-trace, and
publishes each new parameter version to a variable-server node, from which actors pull
every ``pull_period`` unrolls. Actors and the learner call the queue and the variable
server directly; the driver only starts the calls, collects reports, checkpoints and stops.

On the cooperative in-process backend the same nodes run in a fixed order (deterministic:
every actor pushes one unroll, then the learner consumes what is due); on the threaded and
Ray backends every node runs on its own and the queue's backpressure paces the actors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from shoal.backends.base import Backend
from shoal.config import positive, require
from shoal.core.device import learner_gpus
from shoal.core.seeding import derive_seed
from shoal.core.types import ActorReport, Rollout
from shoal.services.queue import QueueEmpty, TrajectoryQueue
from shoal.services.variables import Publisher, VariableServer
from shoal.settings import RunConfig
from shoal.topologies import IterationReport
from shoal.topologies.asynchronous import AsyncProgram, SharedLearnerNode, actor_critic_misfit, idle_report
from shoal.topologies.nodes import ActorNode, NodeContext, add_metrics, mean_metrics


@dataclass
class ImpalaSettings:
    """The topology's own settings (not the algorithm's)."""

    pull_period: int = 1
    """Unrolls an actor runs between parameter pulls."""
    batch_unrolls: int = 0
    """Unrolls per learner batch (0: one per actor)."""
    queue_size: int = 0
    """Most unrolls waiting in the queue (0: four batches)."""
    max_policy_lag: int = 32
    """Unrolls acted with parameters this many versions older than the learner's are dropped."""
    unrolls_per_call: int = 8
    """Unrolls in an actor's first call on concurrent backends (later calls adapt to last about a second)."""

    def __post_init__(self) -> None:
        positive(self, "pull_period", "max_policy_lag", "unrolls_per_call")
        require(self.batch_unrolls >= 0 and self.queue_size >= 0, "batch_unrolls and queue_size must be >= 0")


class QueueNode:
    """A trajectory queue as a node (thread safe: serves puts and gets concurrently).

    Producers wait for room as long as the queue is open (backpressure: a learner busy with an
    evaluation or a checkpoint pauses the actors, it does not fail them); :meth:`close` releases them.
    """

    def __init__(self, capacity: int) -> None:
        self.queue = TrajectoryQueue(capacity, overflow="block", timeout=None, name="trajectories")

    def put(self, item: dict[str, np.ndarray]) -> float | None:
        """Append one unroll, waiting for room; returns the seconds waited for room (0.0 when there was
        room), or None once the queue is closed (the run is stopping)."""
        return self.queue.put_timed(item, timeout=None)

    def get(self, n: int, timeout: float) -> dict[str, np.ndarray] | None:
        """The ``n`` oldest unrolls, or None when they did not arrive within ``timeout`` s or the queue closed."""
        try:
            return self.queue.get(n, timeout=timeout)
        except QueueEmpty:
            return None

    def size(self) -> int:
        return len(self.queue)

    def close(self) -> None:
        self.queue.close()


class ImpalaActorNode(ActorNode):
    """An actor node that pulls from the variable server and pushes into the queue itself."""

    def __init__(self, ctx: NodeContext, actor_id: int, num_actors: int, env_seed: int, actor_seed: int,
                 queue: Any, variables: Any, settings: ImpalaSettings) -> None:
        super().__init__(ctx, actor_id, num_actors, env_seed, actor_seed)
        self.queue, self.variables, self.settings = queue, variables, settings
        self.unrolls = 0
        self.T = self.builder.steps_per_iteration

    def collect(self, num_unrolls: int) -> ActorReport:
        """Run ``num_unrolls`` unrolls, pushing each into the queue; reports steps, episodes and idle time.

        Idle time is what the actor spends not stepping envs for any reason but a full queue
        (pulling parameters, handing unrolls over); waiting for room in a full queue is
        backpressure, reported apart (``actor_backpressure_frac``).
        """
        t0 = time.perf_counter()
        idle = blocked = 0.0
        steps, returns, lengths = 0, [], []
        for _ in range(num_unrolls):
            if self.unrolls % self.settings.pull_period == 0 or self.version < 0:
                w = time.perf_counter()
                self.pull(self.variables)
                idle += time.perf_counter() - w
            report, rollout = self.run(self.T)
            self.unrolls += 1
            steps += report.env_steps
            returns += report.episode_returns
            lengths += report.episode_lengths
            w = time.perf_counter()
            waited = self.queue.call("put", rollout.to_item()).result()
            took = time.perf_counter() - w
            if waited is None:
                break
            blocked += min(waited, took)
            idle += took - min(waited, took)
        return ActorReport(steps, returns, lengths, data=idle_report(time.perf_counter() - t0, idle, blocked, self.env.take_restarts()),
                           actor_id=self.actor_id)


class QueueLearnerNode(SharedLearnerNode):
    """A learner node that trains on batches of unrolls as they come, dropping those that lag too far.

    Its state is handed out as a copy taken between updates, so a checkpoint never mixes two
    versions however the node is served.
    """

    COUNTERS = ("learner_env_steps", "dropped")
    learner_env_steps: int
    dropped: int

    def __init__(self, ctx: NodeContext, max_policy_lag: int, batch_unrolls: int) -> None:
        super().__init__(ctx)  # one update at a time (_lock); state and variables are read between updates
        self.max_policy_lag, self.batch_unrolls = max_policy_lag, batch_unrolls

    def _next_batch(self, timeout: float) -> dict[str, np.ndarray] | None:
        """The next ``batch_unrolls`` unrolls as queue items, or None (none in time, or stopping)."""
        raise NotImplementedError

    def _after_update(self, restored: bool = False) -> None:
        """Make the new version available (publish it, refresh inference); ``restored``: after a checkpoint load."""

    def train(self, num_batches: int, timeout: float, seconds: float | None = None) -> dict[str, float]:
        """Up to ``num_batches`` updates from queued unrolls (for at most ``seconds``); mean metrics, lag, drops."""
        totals: dict[str, float] = {}
        seen: dict[str, int] = {}
        lags: list[int] = []
        done = 0
        t0 = time.monotonic()
        for _ in range(num_batches):
            if seconds is not None and time.monotonic() - t0 >= seconds:
                break
            items = self._next_batch(timeout)
            if items is None:
                break
            rollouts = Rollout.from_items(items)
            with self._lock:
                version = self.learner.version
                fresh = [r for r in rollouts if version - r.policy_version <= self.max_policy_lag]
                self.dropped += len(rollouts) - len(fresh)
                if not fresh:
                    continue
                lags += [version - r.policy_version for r in fresh]
                add_metrics(totals, seen, self.learner.step(fresh))
                self.learner_steps += 1
                self.learner_env_steps += sum(r.num_steps for r in fresh)
                done += 1
                self._after_update()
        out = mean_metrics(totals, seen)
        if lags:
            out["policy_lag"] = float(np.mean(lags))  # mean over this call's unrolls (the learner's own is the oldest)
        out.update(learner_env_steps=float(self.learner_env_steps), dropped_unrolls=float(self.dropped),
                   learner_batches=float(done))
        return out

    def _restored(self) -> None:
        self._after_update(restored=True)


class ImpalaLearnerNode(QueueLearnerNode):
    """Takes batches from the queue node and publishes every new version to the variable server."""

    def __init__(self, ctx: NodeContext, queue: Any, variables: Any, settings: ImpalaSettings, batch_unrolls: int) -> None:
        super().__init__(ctx, settings.max_policy_lag, batch_unrolls)
        self.queue = queue
        self.publisher = Publisher(variables)
        self._after_update()

    def _next_batch(self, timeout: float) -> dict[str, np.ndarray] | None:
        return self.queue.call("get", self.batch_unrolls, timeout).result()

    def _after_update(self, restored: bool = False) -> None:
        self.publisher.publish(*self.learner.get_variables(), restored=restored)


class ImpalaProgram(AsyncProgram):
    """IMPALA's nodes on any backend; asynchronous wherever the backend runs nodes concurrently."""

    def __init__(self, ctx: NodeContext, run: RunConfig, backend: Backend, settings: ImpalaSettings | None = None) -> None:
        self.ctx = ctx
        self.settings = s = settings or ImpalaSettings()
        self.builder = ctx.builder()
        n = run.num_actors
        self.batch_unrolls = s.batch_unrolls or n
        capacity = s.queue_size or 4 * self.batch_unrolls
        require(capacity >= self.batch_unrolls + n, f"queue_size {capacity} must hold a batch ({self.batch_unrolls}) "
                f"plus one unroll per actor ({n}); raise queue_size")
        unroll = self.builder.steps_per_iteration * self.builder.num_envs
        self._init_async(backend, n, unroll, run.steps, s.unrolls_per_call, run.max_restarts)
        conc = max(4, 2 * n + 2)
        self.queue = backend.spawn(QueueNode, capacity, name="queue", num_cpus=0, concurrency=conc)
        self.variables = backend.spawn(VariableServer, name="variables", num_cpus=0, concurrency=conc)
        if run.num_learners > 1:  # a group of ranks averaging gradients, rank 0's versions published
            from shoal.topologies.impala_learners import spawn_impala_learners

            self.learner = spawn_impala_learners(backend, ctx, run.num_learners, self.queue, self.variables, s,
                                                 self.batch_unrolls)
        else:
            self.learner = backend.spawn(ImpalaLearnerNode, ctx, self.queue, self.variables, s, self.batch_unrolls,
                                         name="learner", num_gpus=learner_gpus(ctx.device))
        self.actors = [self._spawn_actor(ImpalaActorNode, ctx, i, n, derive_seed(run.seed, "env", i),
                                         derive_seed(run.seed, "actor", i), self.queue, self.variables, s, name=f"actor-{i}")
                       for i in range(n)]
        self._eval_net = self.builder.make_networks()

    def _start_actor(self, i: int, units: int) -> Any:
        return self.actors[i].call("collect", units)

    def _start_learner(self) -> Any:
        return self.learner.call("train", 1_000_000, 1.0, self.call_seconds)

    def _cooperative_round(self) -> IterationReport:
        reports = self.backend.get([a.call("collect", 1) for a in self.actors])
        queued = self.backend.get(self.queue.call("size"))
        metrics = self.backend.get(self.learner.call("train", queued // self.batch_unrolls, 0.0))
        return self._report(reports, metrics)

    def _release(self) -> None:
        self.backend.get(self.queue.call("close"))


#: The topology's settings (``topology.KEY=VALUE``; printed under ``topology:`` in config.yaml).
Settings = ImpalaSettings

#: ``num_learners > 1`` places a learner group (see :mod:`shoal.topologies.impala_learners`).
MULTI_LEARNER = True


def make_program(ctx: NodeContext, run: RunConfig, backend: Backend, settings: ImpalaSettings | None = None) -> ImpalaProgram:
    """Build the impala topology."""
    return ImpalaProgram(ctx, run, backend, settings)


#: Fits every actor-critic algorithm that records rollouts with behaviour log-probs.
misfit = actor_critic_misfit
