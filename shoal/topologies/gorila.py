"""The ``gorila`` topology (Nair et al. 2015): bundles of actor, replay and learner around a sharded parameter server.

N bundles (``num_actors``), each an actor node and a learner node, and S parameter-server
shards (:mod:`shoal.services.parameter_server`). An actor acts epsilon-greedily with its
Q-network, refreshed from the shards every ``actor_pull_period`` vector steps, and hands
its items to its bundle's replay: the learner node's own table (``replay=bundled``) or one
replay node shared by all bundles (``replay=global``). A learner, at its bundle's replay
ratio, pulls the newest parameters from the shards, samples a batch, computes the DQN
gradient against its target network (refreshed from the shards every
``target_update_period`` server updates) and pushes the gradient's slices to the shards
itself; the driver never sees parameters or gradients. The shards apply gradients with
AdaGrad by default and drop stale and outlier-loss gradients (counted).

On the cooperative in-process backend a round steps each bundle in turn (deterministic);
on concurrent backends every node runs at its own pace, an actor keeping one hand-over to
its learner in flight (backpressure instead of an unbounded mailbox).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from shoal.backends.base import Backend
from shoal.config import positive, require
from shoal.core.device import learner_gpus
from shoal.core.memory import retain_freed_memory
from shoal.core.seeding import derive_seed
from shoal.core.types import ActorReport
from shoal.errors import ConfigError
from shoal.io.checkpoint import Detachable
from shoal.services.parameter_server import APPLIED, OUTLIER, STALE, ParameterServerClient, ShardConfig, spawn_shards
from shoal.services.replay import ReplayNode
from shoal.settings import RunConfig
from shoal.topologies import IterationReport
from shoal.topologies.asynchronous import AsyncProgram, copy_tree
from shoal.topologies.nodes import ActorNode, NodeContext


@dataclass
class GorilaSettings:
    """The topology's own settings."""

    num_shards: int = 2
    """Parameter-server shards (each its own node, holding a slice of the parameters and its optimiser state)."""
    replay: Literal["bundled", "global"] = "bundled"
    """bundled: each learner samples its own actor's replay; global: one replay node for all bundles."""
    optimizer: Literal["adagrad", "adam", "rmsprop", "sgd"] = "adagrad"
    """The shards' optimiser (the paper's is AdaGrad)."""
    lr: float = 0.1
    """The shards' learning rate (AdaGrad's steps shrink as squared gradients accumulate)."""
    eps: float = 1e-10
    """Epsilon of the shards' optimiser denominator."""
    max_staleness: int = 64
    """A shard drops a gradient computed on a version more than this many of its versions old (0: keep all)."""
    outlier_std: float = 6.0
    """A shard drops a gradient whose loss is more than this many standard deviations above the running mean (0: off)."""
    outlier_warmup: int = 100
    """Pushes a shard sees before its outlier filter may drop."""
    loss_window: int = 200
    """Pushes the running loss mean and variance average over."""
    actor_pull_period: int = 16
    """Vector steps an actor runs between parameter pulls from the shards (1: every step)."""
    target_update_period: int = 256
    """Server updates (applied gradients per shard) between a learner's target-network refreshes."""
    units_per_call: int = 4
    """Pull periods in an actor's first call on concurrent backends (later calls adapt to last about a second)."""

    def __post_init__(self) -> None:
        positive(self, "num_shards", "lr", "eps", "actor_pull_period", "target_update_period", "units_per_call")
        require(self.replay in ("bundled", "global"), f"replay must be bundled or global, got {self.replay!r}")
        self.shard_config()  # validates the optimiser and filter settings

    def shard_config(self) -> ShardConfig:
        """What every shard is built with."""
        return ShardConfig(self.optimizer, self.lr, self.eps, self.max_staleness, self.outlier_std,
                           self.outlier_warmup, self.loss_window)


class GorilaLearnerNode:
    """A bundle's learner: its replay (or the global one's handle), a Q-network copy, a target network, a shard client."""

    def __init__(self, ctx: NodeContext, learner_id: int, shards: list[Any], replay: Any,
                 settings: GorilaSettings) -> None:
        if ctx.owns_process():
            retain_freed_memory()
        self.learner_id = learner_id
        self.builder = ctx.builder()
        net = self.builder.make_networks()
        self.tables = self.builder.make_tables() if replay is None else {}
        self.learner: Any = self.builder.make_learner(net, self.tables)
        if not hasattr(self.learner, "compute_gradients") or not hasattr(self.learner, "update_target"):
            raise ConfigError(f"the gorila topology needs a DQN learner; {ctx.algo} is not one (use gorila or dqn)")
        self.client = ParameterServerClient(shards, net)
        self.replay = replay
        self.settings = settings
        self.env_steps = 0  # this bundle's env steps: its replay ratio
        self.learner_steps = 0
        self.target_version = 0.0  # the target starts as the initial network, the shards' version 0
        self.pushes = {APPLIED: 0, STALE: 0, OUTLIER: 0}

    def _refresh(self, pull: bool = True) -> None:
        """Adopt the newest parameters (``pull``: ask the shards; else those the last push brought back);
        refresh the target every ``target_update_period`` server updates."""
        if pull:
            self.client.pull()
        self.client.load_into(self.learner.net)
        if self.client.mean_version - self.target_version >= self.settings.target_update_period:
            self.learner.update_target()
            self.target_version = self.client.mean_version

    def _batches(self, due: int) -> list[dict[str, np.ndarray]]:
        bs = self.builder.replay_batch_size
        if self.replay is not None:
            return [b[0] for b in self.replay.call("sample", due, bs).result()]
        table = next(iter(self.tables.values()))
        if not table.can_sample(bs):
            return []
        return [table.sample(bs)[0] for _ in range(due)]

    def feed(self, items: dict[str, np.ndarray] | None, env_steps: int) -> dict[str, float]:
        """Take the bundle's new items and env steps, then run the learner steps now due; mean metrics."""
        if items is not None and self.tables:
            next(iter(self.tables.values())).insert(items)
        self.env_steps += int(env_steps)
        due = self.builder.learner_steps_due(self.env_steps, self.learner_steps)
        if due <= 0:
            return {}
        totals: dict[str, float] = {}
        batches = self._batches(due)
        for j, batch in enumerate(batches):
            self._refresh(pull=j == 0)  # later steps learn from the slices their previous push brought back
            grad, m = self.learner.compute_gradients(batch)  # clipped as a whole, before the shards see slices
            for o in self.client.push(grad, m["loss"], pull=True):
                self.pushes[o] += 1
            self.learner_steps += 1
            for k, v in m.items():
                totals[k] = totals.get(k, 0.0) + v
        return {k: v / len(batches) for k, v in totals.items()} if batches else {}

    def metrics(self) -> dict[str, float]:
        return {"learner_steps": float(self.learner_steps), "learner_env_steps": float(self.env_steps)}

    def state(self) -> dict[str, Any]:
        s: dict[str, Any] = {"target_networks": copy_tree(self.learner.target.state_dict()),
                             "target_version": float(self.target_version), "learner_steps": self.learner_steps,
                             "env_steps": self.env_steps}
        if self.tables and self.builder.checkpoint_replay:
            s["tables"] = Detachable({k: t.state() for k, t in self.tables.items()})
        return s

    def load_state(self, state: dict[str, Any]) -> None:
        self.learner.target.load_state_dict(state["target_networks"])
        self.target_version = float(state["target_version"])
        self.learner_steps, self.env_steps = int(state["learner_steps"]), int(state["env_steps"])
        for k, t in self.tables.items():
            if "tables" in state and k in state["tables"]:
                t.load_state(state["tables"][k])
        if self.client.pull():
            self.client.load_into(self.learner.net)


class GorilaActorNode(ActorNode):
    """A bundle's actor: acts with parameters pulled from the shards, hands items to its replay and learner."""

    def __init__(self, ctx: NodeContext, actor_id: int, num_actors: int, env_seed: int, actor_seed: int,
                 shards: list[Any], learner: Any, replay: Any, pull_period: int) -> None:
        super().__init__(ctx, actor_id, num_actors, env_seed, actor_seed)
        self.client = ParameterServerClient(shards, self.actor.net)  # type: ignore[attr-defined]
        self.learner, self.replay = learner, replay
        self.pull_period = pull_period
        self._handover: Any = None  # the learner call of the previous hand-over, still in flight

    def work(self, units: int) -> ActorReport:
        """``units`` times: pull parameters if newer, run ``pull_period`` vector steps, hand the items over."""
        steps, returns, lengths, metrics = 0, [], [], []
        for _ in range(units):
            if self.client.pull():
                self.actor.load_variables(sum(self.client.versions), self.client.state_dict(self.actor.net))  # type: ignore[attr-defined]
            report, items = self.run(self.pull_period)
            if self._handover is not None:
                metrics.append(self._handover.result())
            if self.replay is not None:
                if items is not None:
                    self.replay.call("insert", items).result()
                items = None
            self._handover = self.learner.call("feed", items, report.env_steps)
            steps += report.env_steps
            returns += report.episode_returns
            lengths += report.episode_lengths
        return ActorReport(steps, returns, lengths, data={"learner": [m for m in metrics if m]}, actor_id=self.actor_id)

    def flush(self) -> dict[str, float]:
        """Wait for the hand-over in flight; its learner metrics."""
        out, self._handover = (self._handover.result() if self._handover is not None else {}), None
        return out


class GorilaProgram(AsyncProgram):
    """GORILA's nodes: N actor-learner bundles, S shards, optionally one global replay node."""

    def __init__(self, ctx: NodeContext, run: RunConfig, backend: Backend, settings: GorilaSettings | None = None) -> None:
        self.ctx = ctx
        self.settings = s = settings or GorilaSettings()
        self.builder = ctx.builder()
        n = run.num_actors
        self._init_async(backend, n, s.actor_pull_period * self.builder.num_envs, run.steps, s.units_per_call,
                         run.max_restarts)
        self._eval_net = self.builder.make_networks()
        num_params = sum(p.numel() for p in self._eval_net.parameters())
        if s.num_shards > num_params:
            raise ConfigError(f"num_shards={s.num_shards} exceeds the network's {num_params} parameters; use fewer shards")
        self.shards = spawn_shards(backend, self._eval_net, s.num_shards, s.shard_config())
        self.replay = backend.spawn(ReplayNode, ctx, name="replay", num_cpus=0) if s.replay == "global" else None
        self.learners = [backend.spawn(GorilaLearnerNode, ctx, i, self.shards, self.replay, s, name=f"learner-{i}",
                                       num_gpus=learner_gpus(ctx.device))
                         for i in range(n)]
        actor_ctx = dataclasses.replace(ctx, device="cpu")  # actors act on the CPU, whatever the learners' device
        self.env_seeds = [derive_seed(run.seed, "env", i) for i in range(n)]
        self.actor_seeds = [derive_seed(run.seed, "actor", i) for i in range(n)]
        self.actors = [self._spawn_actor(GorilaActorNode, actor_ctx, i, n, self.env_seeds[i], self.actor_seeds[i],
                                         self.shards, self.learners[i], self.replay, s.actor_pull_period, name=f"actor-{i}")
                       for i in range(n)]
        self._client = ParameterServerClient(self.shards, self._eval_net)  # the driver's: evaluation and checkpoints

    @property
    def learner(self) -> Any:  # Program's contract names one learner node; GORILA has N and a sharded server
        raise AttributeError("the gorila program has no single learner node; use .learners and .shards")

    def _start_actor(self, i: int, units: int) -> Any:
        return self.actors[i].call("work", units)

    def _cooperative_round(self) -> IterationReport:
        reports = [self.backend.get(a.call("work", 1)) for a in self.actors]
        return self._report(reports, {})

    def _report(self, reports: list[ActorReport], metrics: dict[str, float]) -> IterationReport:
        learner = [m for r in reports for m in r.data["learner"]]
        keys = {k for m in learner for k in m}
        for k in keys:
            vals = [m[k] for m in learner if k in m]
            metrics[k] = float(np.mean(vals))
        return super()._report(reports, metrics)

    def _extra_metrics(self) -> dict[str, float]:
        shards = self.backend.get([sh.call("metrics") for sh in self.shards])
        learners = self.backend.get([ln.call("metrics") for ln in self.learners])
        return {"server_version": float(np.mean([m["version"] for m in shards])),
                "applied_gradients": float(sum(m["applied"] for m in shards)),
                "dropped_stale": float(sum(m["dropped_stale"] for m in shards)),
                "dropped_outlier": float(sum(m["dropped_outlier"] for m in shards)),
                "dropped_nonfinite": float(sum(m.get("dropped_nonfinite", 0.0) for m in shards)),
                "gradient_staleness": float(np.mean([m["staleness"] for m in shards])),
                "learner_steps": float(sum(m["learner_steps"] for m in learners))}

    def _outstanding(self) -> list[Any]:
        return [f for f, _, _ in self._actor_calls.values()]

    def close(self) -> None:
        """Let outstanding calls and hand-overs end, stop every node."""
        try:
            pending = self._outstanding()
            if pending:
                self.backend.wait(pending, num_returns=len(pending), timeout=60.0)
            self.backend.wait([a.call("flush") for a in self.actors], num_returns=len(self.actors), timeout=60.0)
        finally:
            self._actor_calls.clear()
            self.backend.shutdown()

    def eval_policy(self) -> Any:
        """A deterministic policy with the parameters the shards hold now."""
        self._client.fetch()
        self._client.load_into(self._eval_net)
        return self.builder.make_policy(self._eval_net, evaluation=True)

    def state(self) -> dict[str, Any]:
        """The shards' slices and optimiser states, each learner's target and replay, the driver's counters.

        Shards and learners keep running on concurrent backends while it is taken, so the
        pieces are each consistent but not all from one instant.
        """
        shards = self.backend.get([sh.call("state") for sh in self.shards])
        learners = self.backend.get([ln.call("state") for ln in self.learners])
        self._client.fetch()
        out: dict[str, Any] = {"learner": {"networks": self._client.state_dict(self._eval_net)}, "shards": shards,
                               "learners": learners, "env_steps": self.env_steps}
        if self.replay is not None and self.builder.checkpoint_replay:
            out["replay"] = Detachable(self.backend.get(self.replay.call("state")))
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        if len(state["shards"]) != len(self.shards) or len(state["learners"]) != len(self.learners):
            raise ConfigError(f"the checkpoint has {len(state['shards'])} shards and {len(state['learners'])} bundles, "
                              f"this run {len(self.shards)} and {len(self.learners)}; resume with the same num_shards "
                              "and num_actors")
        self.backend.get([sh.call("load_state", st) for sh, st in zip(self.shards, state["shards"])])
        if self.replay is not None and state.get("replay"):
            self.backend.get(self.replay.call("load_state", state["replay"]))
        self.backend.get([ln.call("load_state", st) for ln, st in zip(self.learners, state["learners"])])
        self.env_steps = int(state["env_steps"])


#: The topology's settings (``topology.KEY=VALUE``; printed under ``topology:`` in config.yaml).
Settings = GorilaSettings


def make_program(ctx: NodeContext, run: RunConfig, backend: Backend, settings: GorilaSettings | None = None) -> GorilaProgram:
    """Build the gorila topology."""
    return GorilaProgram(ctx, run, backend, settings)


def misfit(builder: Any) -> str | None:
    """Why this topology cannot run ``builder``'s algorithm (None: it fits)."""
    from shoal.agents.dqn.builder import DQNBuilder
    from shoal.data.selectors import Uniform

    if not isinstance(builder, DQNBuilder):
        return "its learners compute DQN gradients from a replay; use gorila or dqn"
    table = next(iter(builder.make_tables().values()), None)
    if not isinstance(getattr(table, "selector", None), Uniform):
        return "its replay is sampled uniformly, as in the paper; set prioritized=false"
    return None
