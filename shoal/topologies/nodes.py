"""The nodes topologies place: an actor node (env loop) and a learner node.

Nodes are plain classes built from picklable arguments (algorithm name, config dict,
env id), so any backend can create them in any process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from shoal.agents import registry
from shoal.config import build
from shoal.core.interfaces import Builder
from shoal.core.memory import retain_freed_memory
from shoal.core.seeding import seeded_global_rngs
from shoal.core.threads import set_threads
from shoal.core.types import ActorReport, EnvSpec
from shoal.io.checkpoint import Detachable


@dataclass(frozen=True)
class NodeContext:
    """What every node needs to rebuild its algorithm's pieces."""

    algo: str
    agent_config: dict[str, Any]
    env: Any  # env id or factory
    env_spec: EnvSpec
    total_steps: int
    seed: int
    torch_threads: int = 1
    device: str = "cpu"
    vector: str = "auto"

    driver_pid: int = field(default_factory=os.getpid)
    """The process that made this context (the user's driver); nodes elsewhere own their process."""

    def builder(self) -> Builder:
        """The algorithm's builder; its ``make_networks`` always returns the run's initial weights.

        Network initialisation draws from the global generators, so ``make_networks`` runs
        with them seeded from the run seed (every node, in this process or another, starts
        from the same weights) and the caller's generator states restored afterwards.
        """
        set_threads(self.torch_threads)
        spec = registry.get(self.algo)
        cfg = build(spec.config_cls(), self.agent_config)
        builder = spec.builder_cls()(cfg, self.env_spec, total_steps=self.total_steps, seed=self.seed, device=self.device)
        make_networks = builder.make_networks

        def seeded_make_networks() -> nn.Module:
            with seeded_global_rngs(self.seed):
                return make_networks()

        builder.make_networks = seeded_make_networks
        return builder

    def owns_process(self) -> bool:
        """True in a node process of its own (e.g. a Ray worker), False in the driver that made the context."""
        return os.getpid() != self.driver_pid


class ActorNode:
    """Steps a vector env with one actor and reports episodes and the adder's data."""

    def __init__(self, ctx: NodeContext, actor_id: int, num_actors: int, env_seed: int, actor_seed: int) -> None:
        from shoal.envs import make_vec_env

        self.builder = ctx.builder()
        self.actor_id = actor_id
        self.env = make_vec_env(ctx.env, self.builder.num_envs, seed=env_seed, mode=ctx.vector)
        self.env_seed = env_seed
        self.actor = self.builder.make_actor(self.builder.make_networks(), self.env.num_envs, actor_id, num_actors, actor_seed)
        self.actor.observe_first(self.env.obs)
        spec = ctx.env_spec
        self.low, self.high = (None, None) if spec.discrete else (spec.action_low, spec.action_high)
        self.reward_norm = self.builder.make_reward_normalizer(self.env.num_envs)
        self.resets = 0

    def run(self, num_steps: int, variables: tuple[int, dict] | None = None) -> tuple[ActorReport, Any]:
        """Run ``num_steps`` vector steps (after adopting ``variables`` if given).

        Episode returns are the env's own (``VecEnv``'s ``extras["episodes"]``): on Atari the
        game score of whole games, while the learner sees clipped, per-life steps.
        """
        if variables is not None:
            self.actor.load_variables(*variables)
        env, actor = self.env, self.actor
        returns: list[float] = []
        lengths: list[int] = []
        obs = env.obs
        for _ in range(num_steps):
            action = actor.select_action(obs)
            env_action = action if self.low is None else np.clip(action, self.low, self.high)
            step = env.step(env_action)
            ended = step.extras.get("episodes")
            if ended is not None:
                returns.extend(ended.returns.tolist())
                lengths.extend(ended.lengths.tolist())
            if self.reward_norm is not None:
                step.reward = self.reward_norm(step.reward, step.done)
            actor.observe(action, step)
            obs = step.next_obs
        report = ActorReport(num_steps * env.num_envs, returns, lengths, actor_id=self.actor_id)
        return report, actor.drain()

    def state(self) -> dict[str, Any]:
        s: dict[str, Any] = {"actor": self.actor.state()}
        if self.reward_norm is not None:
            s["reward_norm"] = self.reward_norm.state()
        return s

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore actor state; envs restart fresh episodes with a new derived seed."""
        if state.get("actor"):
            self.actor.load_state(state["actor"])
        if self.reward_norm is not None and "reward_norm" in state:
            self.reward_norm.load_state(state["reward_norm"])
        self.resets += 1
        obs = self.env.reset(seed=self.env_seed + 7919 * self.resets)
        if hasattr(self.actor, "t"):
            self.actor.t = 0
        self.actor.observe_first(obs)

    def close(self) -> None:
        self.env.close()


class LearnerNode:
    """Holds the learner and its tables; routes actor data into them and runs updates."""

    def __init__(self, ctx: NodeContext) -> None:
        if ctx.owns_process():
            retain_freed_memory()  # a learner process of its own: keep freed activation blocks (see there)
        self.builder = ctx.builder()
        self.networks = self.builder.make_networks()
        self.tables = self.builder.make_tables()
        self.learner = self.builder.make_learner(self.networks, self.tables)
        self.learner_steps = 0

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        return self.learner.get_variables()

    def learn(self, env_steps: int, *data: Any) -> dict[str, float]:
        """Feed the actors' data in and run the learner steps now due; returns mean metrics."""
        if self.tables:
            for items in data:
                if items is None:
                    continue
                priorities = items.pop("priority", None) if isinstance(items, dict) else None
                next(iter(self.tables.values())).insert(items, priorities)
            payload = None
        else:
            payload = [d for d in data if d is not None]
        due = self.builder.learner_steps_due(env_steps, self.learner_steps)
        if self.tables and not next(iter(self.tables.values())).can_sample(max(1, self.builder.replay_batch_size)):
            due = 0  # a replay restored empty (a resume without it) refills before the learner samples again
        totals: dict[str, Any] = {}
        for _ in range(due):
            m = self.learner.step(payload)
            self.learner_steps += 1
            for k, v in m.items():  # tensors stay on their device until the end: one sync per call
                totals[k] = totals[k] + v if k in totals else v
        return {k: float(v) / due for k, v in totals.items()} if due else {}

    def state(self) -> dict[str, Any]:
        s: dict[str, Any] = {"learner": self.learner.state(), "learner_steps": self.learner_steps}
        if self.tables and self.builder.checkpoint_replay:
            # Detachable: the runner keeps the replay only with the newest checkpoint.
            s["tables"] = Detachable({k: t.state() for k, t in self.tables.items()})
        return s

    def load_state(self, state: dict[str, Any]) -> None:
        self.learner.load_state(state["learner"])
        self.learner_steps = int(state["learner_steps"])
        for k, t in self.tables.items():
            if "tables" in state and k in state["tables"]:
                t.load_state(state["tables"][k])
