"""The ``apex`` topology (Horgan et al. 2018): N actors, one central replay, one learner.

- **Actors** (:class:`~shoal.topologies.nodes.ActorNode`, the algorithm's own actor) run
  ``K = builder.actor_pull_period`` vector steps at a time with the newest parameters
  the driver has seen, so they pull parameters every K steps. Each computes its items'
  initial priorities before handing them over (for DQN: ``actor_priorities``, n-step TD
  errors with its local network) and explores at its own rate (``actor_id`` is passed
  to the builder; DQN's ``exploration=apex`` gives ``eps ** (1 + alpha * i / (N - 1))``).
- **Replay** (:class:`~shoal.services.replay.ReplayNode`) holds the algorithm's first
  table, a prioritized one; its FIFO remover drops the oldest items once it is full.
- **Learner** (:class:`ApexLearnerNode`) asks the replay node for
  ``builder.batches_per_call`` batches per call, runs one learner step per batch, and
  returns the new priorities, which go back to the replay node in one call.

Nothing here knows a loss: any builder whose tables, actors and learner follow the
``local`` conventions runs here, e.g. an Ape-X DPG builder. Its learner only has to sample
from the table it was built with: the learner node builds it on a
:class:`~shoal.services.replay.BatchFeed` that serves the batches the replay node sent.

The driver keeps every node busy with ``backend.wait``: on Ray the actors, the replay
node and the learner run concurrently, and data moves node to node through the object
store (the driver passes only references, and only references that are ready, since an
actor runs a caller's calls in order); in-process the same code is a cooperative loop
(actors run a chunk, the learner its due steps). The learner keeps to the builder's
replay ratio (``learner_steps_due``): actors wait while it is more than two calls behind.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shoal.backends.base import Backend, Future
from shoal.core.device import learner_gpus
from shoal.core.memory import retain_freed_memory
from shoal.core.seeding import derive_seed
from shoal.errors import ConfigError
from shoal.io.checkpoint import Detachable
from shoal.services.replay import BatchFeed, ReplayNode, SampledBatch
from shoal.settings import RunConfig
from shoal.topologies import IterationReport, Program
from shoal.topologies.nodes import ActorNode, NodeContext


class ApexLearnerNode:
    """The learner, fed with batches from the replay node; serves versioned parameters."""

    def __init__(self, ctx: NodeContext) -> None:
        if ctx.owns_process():
            retain_freed_memory()  # a learner process of its own: keep freed activation blocks
        self.builder = ctx.builder()
        self.networks = self.builder.make_networks()
        name = next(iter(self.builder.make_tables()), "replay")
        self.feed = BatchFeed()
        self.learner = self.builder.make_learner(self.networks, {name: self.feed})
        self.learner_steps = 0

    def get_variables(self) -> tuple[int, dict[str, Any]]:
        return self.learner.get_variables()

    def learn(self, batches: list[SampledBatch]) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray] | None]:
        """One learner step per batch; returns mean metrics (with ``learner_steps`` done) and new priorities."""
        self.feed.feed(batches)
        totals: dict[str, float] = {}
        done = 0
        while self.feed.pending:
            for k, v in self.learner.step().items():
                totals[k] = totals.get(k, 0.0) + float(v)
            done += 1
        self.learner_steps += done
        metrics = {k: v / done for k, v in totals.items()} if done else {}
        metrics["learner_steps"] = float(done)
        return metrics, self.feed.take_priorities()

    def state(self) -> dict[str, Any]:
        return {"learner": self.learner.state(), "learner_steps": self.learner_steps}

    def load_state(self, state: dict[str, Any]) -> None:
        self.learner.load_state(state["learner"])
        self.learner_steps = int(state["learner_steps"])


class ApexProgram(Program):
    """Asynchronous actors and learner around one replay node, on any backend."""

    def __init__(self, ctx: NodeContext, run: RunConfig, backend: Backend) -> None:
        self.backend = backend
        self.builder = ctx.builder()
        b = self.builder
        self.pull_period = b.actor_pull_period
        self.batches_per_call = b.batches_per_call
        self.batch_size = b.replay_batch_size
        if self.batch_size < 1:
            raise ConfigError(f"{ctx.algo} samples no replay batches (replay_batch_size={self.batch_size}), so it "
                              "cannot run on the apex topology; use an off-policy algorithm such as apex_dqn")
        self.checkpoint_replay = b.checkpoint_replay
        # The replay node does little arithmetic: it takes no CPU slot of its own, so
        # N actors + learner fit the N + 1 CPUs the runner asks Ray for.
        self.replay = backend.spawn(ReplayNode, ctx, name="replay", num_cpus=0)
        self.learner = backend.spawn(ApexLearnerNode, ctx, name="learner", num_gpus=learner_gpus(ctx.device))
        n = run.num_actors
        self.env_seeds = [derive_seed(run.seed, "env", i) for i in range(n)]
        self.actor_seeds = [derive_seed(run.seed, "actor", i) for i in range(n)]
        self.actors = [backend.spawn(ActorNode, ctx, i, n, self.env_seeds[i], self.actor_seeds[i], name=f"actor-{i}")
                       for i in range(n)]
        self.env_steps = 0
        self.learner_steps = 0
        self.variables: Future = self.learner.call("get_variables")
        self.acting: dict[Future, tuple[int, Future]] = {}  # report future -> (actor id, data future)
        self.learning: Future | None = None  # metrics future of the learn call in flight
        self.priorities: Future | None = None
        self.starved = False  # the last learn call found too little data to sample
        self.idle = list(range(n))
        self.side: list[Future] = []  # inserts and priority updates, checked for errors as they finish
        self._eval_net = b.make_networks()

    # -- the loop ------------------------------------------------------------------------------
    def _due(self) -> int:
        return self.builder.learner_steps_due(self.env_steps, self.learner_steps)

    def _launch(self) -> None:
        due = self._due()
        if self.learning is None and due > 0:
            samples = self.replay.call("sample", min(due, self.batches_per_call), self.batch_size)
            self.learning, self.priorities = self.learner.call("learn", samples, num_returns=2)
        # Actors wait while the learner is behind the replay ratio by more than two calls
        # (unless it is starved: then only new data can help).
        if due <= 2 * self.batches_per_call or self.starved:
            for i in sorted(self.idle):
                report, data = self.actors[i].call("run", self.pull_period, self.variables, num_returns=2)
                self.acting[report] = (i, data)
            self.idle = []

    def run_iteration(self) -> IterationReport:
        self._launch()
        pending = ([self.learning] if self.learning is not None else []) + list(self.acting)
        ready, _ = self.backend.wait(pending, num_returns=1)
        out = IterationReport(0)
        ready_set = set(map(id, ready))
        if self.learning is not None and id(self.learning) in ready_set:
            metrics = dict(self.backend.get(self.learning))
            steps = int(metrics.pop("learner_steps", 0))
            self.learner_steps += steps
            self.starved = steps == 0
            # The priorities are ready now: passing them on cannot hold up the replay node's queue.
            self.side.append(self.replay.call("update_priorities", self.priorities))
            if steps:
                self.variables = self.learner.call("get_variables")
            self.learning = self.priorities = None
            out.metrics = {**metrics, "learner_steps": float(self.learner_steps)} if metrics else {}
        for f in [f for f in self.acting if id(f) in ready_set]:
            i, data = self.acting.pop(f)
            rep = self.backend.get(f)
            self.side.append(self.replay.call("insert", data))
            self.idle.append(i)
            out.env_steps += rep.env_steps
            out.episode_returns.extend(rep.episode_returns)
            out.episode_lengths.extend(rep.episode_lengths)
        self.env_steps += out.env_steps
        self._check_side()
        return out

    def _check_side(self, wait_all: bool = False) -> None:
        """Resolve finished inserts and priority updates so their errors surface here."""
        if not self.side:
            return
        done, self.side = self.backend.wait(self.side, num_returns=len(self.side),
                                            timeout=None if wait_all else 0)
        self.backend.get(done)

    # -- Program ---------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        learner_state = self.backend.get(self.learner.call("state"))
        actor_states = self.backend.get([a.call("state") for a in self.actors])
        out = {"learner": learner_state["learner"], "learner_node": {"learner_steps": learner_state["learner_steps"]},
               "actors": actor_states, "env_steps": self.env_steps,
               # the learner node's count: on Ray it includes a learn call still in flight here
               "learner_steps": learner_state["learner_steps"]}
        if self.checkpoint_replay:
            out["replay"] = Detachable(self.backend.get(self.replay.call("state")))  # kept with the newest checkpoint only
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        node_state = {"learner": state["learner"], **state["learner_node"]}
        calls = [self.learner.call("load_state", node_state)]
        if "replay" in state:
            calls.append(self.replay.call("load_state", state["replay"]))
        if len(state["actors"]) == len(self.actors):
            calls += [a.call("load_state", s) for a, s in zip(self.actors, state["actors"])]
        self.backend.get(calls)
        self.env_steps = int(state["env_steps"])
        self.learner_steps = int(state["learner_steps"])
        self.variables = self.learner.call("get_variables")


def make_program(ctx: NodeContext, run: RunConfig, backend: Backend, settings: Any = None) -> ApexProgram:
    """Build the Ape-X topology."""
    return ApexProgram(ctx, run, backend)


def misfit(builder: Any) -> str | None:
    """Why this topology cannot run ``builder``'s algorithm (None: it fits)."""
    if builder.replay_batch_size <= 0:
        return "its learner samples a central replay; use an off-policy algorithm (dqn, ddpg, td3, sac, apex_dqn, apex_ddpg)"
    return None
