"""The ``apex`` topology (Horgan et al. 2018): N actors, one central replay, one learner.

- **Actors** (:class:`ApexActorNode`, the algorithm's own actor) run ``K =
  builder.actor_pull_period`` vector steps at a time, pulling the newest parameters from the
  variable server before each chunk, and insert the chunk's items into the replay node
  themselves. Each computes its items' initial priorities first (for DQN:
  ``actor_priorities``, n-step TD errors with its local network) and explores at its own
  rate (``actor_id`` is passed to the builder; DQN's ``exploration=apex`` gives
  ``eps ** (1 + alpha * i / (N - 1))``).
- **Replay** (:class:`~shoal.services.replay.ReplayNode`) holds the algorithm's first
  table, a prioritized one whose FIFO remover drops the oldest items once it is full. Its
  rate limiter keeps the algorithm's replay ratio (``builder.replay_rate``: samples per
  inserted item, from a minimum size on) within a tolerance: actors ahead of the learner
  wait inside their insert (backpressure, reported as ``actor_backpressure_frac``), and a
  learner ahead of the actors waits inside its sample. No counting happens in the driver.
- **Learner** (:class:`ApexLearnerNode`) samples ``builder.batches_per_call`` batches per
  replay call, runs one learner step per batch, sends the new priorities back to the replay
  node and publishes each new parameter version to the variable server.

Nodes call each other directly; the driver only starts calls, collects reports,
checkpoints and stops. Nothing here knows a loss: any builder whose tables, actors and
learner follow the ``local`` conventions runs here (e.g. Ape-X DPG); its learner samples
the table it was built with, which the learner node builds on a
:class:`~shoal.services.replay.BatchFeed` serving the batches the replay node sent.

On the cooperative in-process backend the same nodes run in a fixed order (deterministic:
every actor runs a chunk and inserts it, then the learner takes every batch the rate
limiter admits); on the threaded and Ray backends every node runs on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from shoal.backends.base import Backend
from shoal.config import positive, require
from shoal.core.device import learner_gpus
from shoal.core.memory import retain_freed_memory
from shoal.core.seeding import derive_seed
from shoal.core.types import ActorReport
from shoal.errors import ConfigError
from shoal.io.checkpoint import Detachable
from shoal.services.replay import BatchFeed, ReplayNode
from shoal.services.variables import Publisher, VariableServer
from shoal.settings import RunConfig
from shoal.topologies import IterationReport
from shoal.topologies.asynchronous import AsyncProgram, copy_tree, idle_report
from shoal.topologies.nodes import ActorNode, NodeContext, add_metrics, mean_metrics


@dataclass
class ApexSettings:
    """The topology's own settings (not the algorithm's)."""

    ratio_tolerance: float = 2.0
    """How far the actors may run ahead of the replay ratio before the replay node holds them back, in
    units of the larger of one learner call's samples and one round of actor inserts (times the ratio);
    at least 1. The learner may never be more than one call ahead of it."""
    sample_timeout_s: float = 0.25
    """How long the learner's sample call waits for the rate limiter before the call reports back."""
    chunks_per_call: int = 4
    """Chunks (``actor_update_period`` vector steps each) in an actor's first call on concurrent backends
    (later calls adapt to last about a second)."""

    def __post_init__(self) -> None:
        positive(self, "chunks_per_call", "sample_timeout_s")
        require(self.ratio_tolerance >= 1, f"ratio_tolerance must be >= 1 (one round of actor inserts), "
                f"got {self.ratio_tolerance}")


class ApexActorNode(ActorNode):
    """An actor that pulls from the variable server and inserts into the replay node itself."""

    def __init__(self, ctx: NodeContext, actor_id: int, num_actors: int, env_seed: int, actor_seed: int,
                 replay: Any, variables: Any) -> None:
        super().__init__(ctx, actor_id, num_actors, env_seed, actor_seed)
        self.replay, self.variables = replay, variables
        self.K = self.builder.actor_pull_period

    def collect(self, num_chunks: int) -> ActorReport:
        """Run ``num_chunks`` chunks of ``K`` vector steps: pull, step, insert; reports steps, episodes, idle time.

        Waiting inside an insert because the rate limiter holds the actors back is backpressure
        (``actor_backpressure_frac``); the rest of the time not spent stepping is idle time.
        """
        t0 = time.perf_counter()
        idle = blocked = 0.0
        steps, returns, lengths = 0, [], []
        for _ in range(num_chunks):
            w = time.perf_counter()
            self.pull(self.variables)
            idle += time.perf_counter() - w
            report, data = self.run(self.K)
            steps += report.env_steps
            returns += report.episode_returns
            lengths += report.episode_lengths
            w = time.perf_counter()
            waited = self.replay.call("put", data).result()
            took = time.perf_counter() - w
            if waited is None:  # the replay node closed: the run is stopping
                break
            blocked += min(waited, took)
            idle += took - min(waited, took)
        return ActorReport(steps, returns, lengths, actor_id=self.actor_id,
                           data=idle_report(time.perf_counter() - t0, idle, blocked, self.env.take_restarts()))


class ApexLearnerNode:
    """The learner: samples the replay node, learns, sends priorities back, publishes versions."""

    def __init__(self, ctx: NodeContext, replay: Any, variables: Any) -> None:
        if ctx.owns_process():
            retain_freed_memory()  # a learner process of its own: keep freed activation blocks
        self.builder = ctx.builder()
        self.networks = self.builder.make_networks()
        name = next(iter(self.builder.make_tables()), "replay")
        self.feed = BatchFeed()
        self.learner = self.builder.make_learner(self.networks, {name: self.feed})
        self.replay = replay
        self.publisher = Publisher(variables)
        self.batches_per_call, self.batch_size = self.builder.batches_per_call, self.builder.replay_batch_size
        self.learner_steps = 0
        self._priorities: Any = None  # the update_priorities call in flight
        self.publisher.publish(*self.learner.get_variables())

    def get_variables(self) -> tuple[int, dict[str, Any]]:
        return self.learner.get_variables()

    def train(self, seconds: float | None, timeout: float) -> dict[str, float]:
        """Learn from replay batches for about ``seconds`` (None: while the replay admits samples at once).

        ``timeout``: how long one replay call waits for the rate limiter to admit a sample.
        Returns mean metrics over the steps done, with ``learner_steps`` (in all).
        """
        totals: dict[str, Any] = {}
        seen: dict[str, int] = {}
        t0 = time.monotonic()
        while seconds is None or time.monotonic() - t0 < seconds:
            batches = self.replay.call("sample", self.batches_per_call, self.batch_size, timeout).result()
            if not batches:
                break
            self.feed.feed(batches)
            while self.feed.pending:
                add_metrics(totals, seen, self.learner.step())  # tensors stay where they are until the end
            self.learner_steps += len(batches)
            if self._priorities is not None:
                self._priorities.result()  # one update in flight at most; its errors surface here
            self._priorities = self.replay.call("update_priorities", self.feed.take_priorities())
            self.publisher.publish(*self.learner.get_variables())
        out = mean_metrics(totals, seen)
        out["learner_steps"] = float(self.learner_steps)
        return out

    def state(self) -> dict[str, Any]:
        """A copy taken between updates (the caller may serialise it while this node learns on)."""
        return copy_tree({"learner": self.learner.state(), "learner_steps": self.learner_steps})

    def load_state(self, state: dict[str, Any]) -> None:
        self.learner.load_state(state["learner"])
        self.learner_steps = int(state["learner_steps"])
        self.publisher.publish(*self.learner.get_variables(), restored=True)


class ApexProgram(AsyncProgram):
    """Ape-X's nodes on any backend; asynchronous wherever the backend runs nodes concurrently."""

    def __init__(self, ctx: NodeContext, run: RunConfig, backend: Backend, settings: ApexSettings | None = None) -> None:
        self.settings = s = settings or ApexSettings()
        self.builder = b = ctx.builder()
        self.batch_size = b.replay_batch_size
        if self.batch_size < 1:
            raise ConfigError(f"{ctx.algo} samples no replay batches (replay_batch_size={self.batch_size}), so it "
                              "cannot run on the apex topology; use an off-policy algorithm such as apex_dqn")
        self.pull_period, self.batches_per_call = b.actor_pull_period, b.batches_per_call
        self.checkpoint_replay = b.checkpoint_replay
        n = run.num_actors
        spi, min_size = b.replay_rate
        if not 0 < spi < float("inf"):
            raise ConfigError(f"{ctx.algo}'s replay ratio is {spi} samples per insert; the apex topology keeps a "
                              "finite, positive ratio: check batch_size, gradient_steps and train_freq")
        chunk_items = self.pull_period * b.num_envs
        call = self.batches_per_call * self.batch_size
        # The rate limiter's band around the target spi * (inserts - min_size) samples: the learner
        # may be one call ahead of it at most, the actors ratio_tolerance times the larger of a call
        # and a round of their inserts (twice that: an episode end flushes n-step items too), so
        # neither waits in steady state and the cooperative round (all actors, then the learner
        # drains) always fits.
        slack = s.ratio_tolerance * max(call, n * chunk_items * b.items_per_env_step * spi)
        offset = spi * min_size
        self.rate_band = (offset, offset + 2 * slack + 1)
        self.samples_per_insert, self.min_size = spi, min_size
        self._init_async(backend, n, chunk_items, run.steps, s.chunks_per_call, run.max_restarts)
        conc = max(4, 2 * n + 2)
        # Replay and variable servers do little arithmetic: they take no CPU slot of their own.
        self.replay = backend.spawn(ReplayNode, ctx, (spi, min_size, self.rate_band), self.concurrent, name="replay",
                                    num_cpus=0, concurrency=conc)
        self.variables = backend.spawn(VariableServer, name="variables", num_cpus=0, concurrency=conc)
        self.learner = backend.spawn(ApexLearnerNode, ctx, self.replay, self.variables, name="learner",
                                     num_gpus=learner_gpus(ctx.device))
        self.env_seeds = [derive_seed(run.seed, "env", i) for i in range(n)]
        self.actor_seeds = [derive_seed(run.seed, "actor", i) for i in range(n)]
        self.actors = [self._spawn_actor(ApexActorNode, ctx, i, n, self.env_seeds[i], self.actor_seeds[i], self.replay,
                                         self.variables, name=f"actor-{i}")
                       for i in range(n)]
        self.learner_steps = 0
        self._eval_net = b.make_networks()

    def _start_actor(self, i: int, units: int) -> Any:
        return self.actors[i].call("collect", units)

    def _start_learner(self) -> Any:
        return self.learner.call("train", self.call_seconds, self.settings.sample_timeout_s)

    def _cooperative_round(self) -> IterationReport:
        reports = self.backend.get([a.call("collect", 1) for a in self.actors])
        return self._report(reports, self.backend.get(self.learner.call("train", None, 0.0)))

    def _report(self, reports: list[ActorReport], metrics: dict[str, float]) -> IterationReport:
        if "learner_steps" in metrics:
            self.learner_steps = int(metrics["learner_steps"])
        return super()._report(reports, metrics)

    def _extra_metrics(self) -> dict[str, float]:
        return dict(self.backend.get(self.replay.call("metrics")))

    def _release(self) -> None:
        self.backend.get(self.replay.call("close"))

    # -- checkpoints ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        out = super().state()
        out["learner_steps"] = int(out["learner_node"]["learner_steps"])
        if self.checkpoint_replay:
            out["replay"] = Detachable(self.backend.get(self.replay.call("state")))  # kept with the newest checkpoint only
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        if "replay" in state:
            self.backend.get(self.replay.call("load_state", state["replay"]))
        super().load_state(state)
        self.learner_steps = int(state["learner_steps"])


#: The topology's settings (``topology.KEY=VALUE``; printed under ``topology:`` in config.yaml).
Settings = ApexSettings


def make_program(ctx: NodeContext, run: RunConfig, backend: Backend, settings: ApexSettings | None = None) -> ApexProgram:
    """Build the Ape-X topology."""
    return ApexProgram(ctx, run, backend, settings)


def misfit(builder: Any) -> str | None:
    """Why this topology cannot run ``builder``'s algorithm (None: it fits)."""
    if builder.replay_batch_size <= 0:
        return "its learner samples a central replay; use an off-policy algorithm (dqn, ddpg, td3, sac, apex_dqn, apex_ddpg)"
    return None
