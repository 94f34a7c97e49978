"""The nodes topologies place: an actor node (env loop) and a learner node.

Nodes are plain classes built from picklable arguments (algorithm name, config dict,
env id), so any backend can create them in any process.
"""

from __future__ import annotations

import logging
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
from shoal.core.seeding import derive_seed, seeded_global_rngs
from shoal.core.threads import set_threads
from shoal.core.types import ActorReport, EnvSpec
from shoal.io.checkpoint import Detachable

_log = logging.getLogger("shoal")


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
    max_restarts: int = 3
    """Times an actor node's env may raise and be made anew before the node fails (``RunConfig.max_restarts``)."""
    inference_device: str = ""
    """Where batched inference apart from the actors runs (empty: ``device``); see :attr:`inference_on`."""

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

    @property
    def inference_on(self) -> str:
        """The device of a node's batched inference (SEED's server, GA3C's predictor)."""
        return self.inference_device or self.device

    def owns_process(self) -> bool:
        """True in a node process of its own (e.g. a Ray worker), False in the driver that made the context."""
        return os.getpid() != self.driver_pid


class EnvRestarted(Exception):
    """The env raised during a step and was made anew: the caller drops what it held of the
    interrupted episodes (a partial unroll) and starts over from ``env.obs``."""


class RestartingEnv:
    """A node's vector env that is made anew, with a fresh derived seed, when a step raises.

    An env that crashes (a simulator fault, a lost connection) costs its node the episodes in
    progress, not the run: :meth:`step` closes it, makes a new one and raises
    :class:`EnvRestarted`. After ``max_restarts`` such failures the next one is an
    :class:`~shoal.errors.EnvError` naming the env and the last error. An env that answers
    wrongly (the :class:`~shoal.errors.EnvError` of the vector env's checks: a non-finite or
    misshapen observation) is not made anew: that error stops the run at once.
    """

    def __init__(self, ctx: NodeContext, num_envs: int, seed: int, owner: str) -> None:
        self.ctx, self.num_envs_asked, self.seed, self.owner = ctx, num_envs, seed, owner
        self.restarts = 0  # in this process: a node restarted by its backend gets a fresh budget
        self._reported = 0
        self.env = self._make(seed)

    def _make(self, seed: int) -> Any:
        from shoal.envs import make_vec_env

        return make_vec_env(self.ctx.env, self.num_envs_asked, seed=seed, mode=self.ctx.vector)

    @property
    def obs(self) -> np.ndarray:
        return self.env.obs

    @property
    def num_envs(self) -> int:
        return self.env.num_envs

    def step(self, action: np.ndarray) -> Any:
        from shoal.errors import EnvError

        try:
            return self.env.step(action)
        except EnvError:  # the env answered, wrongly (a NaN, a wrong shape): a bug a new env would repeat
            raise
        except Exception as e:  # the env crashed
            self.recreate(e)
            raise EnvRestarted(str(e)) from e

    def recreate(self, error: BaseException) -> None:
        """Replace the env after ``error`` (or fail once ``max_restarts`` is used up)."""
        from shoal.errors import EnvError

        self.restarts += 1
        if self.restarts > self.ctx.max_restarts:
            raise EnvError(f"{self.owner}: env {_env_name(self.ctx.env)} raised {self.restarts} times "
                           f"(last: {type(error).__name__}: {error}); fix the env, or allow more with "
                           f"max_restarts (now {self.ctx.max_restarts})") from error
        _log.warning("%s: env %s raised %s: %s; made it anew (%d of %d)", self.owner, _env_name(self.ctx.env),
                     type(error).__name__, error, self.restarts, self.ctx.max_restarts)
        try:
            self.env.close()
        except Exception:  # a crashed env may not close cleanly; it is dropped either way
            pass
        try:
            self.env = self._make(derive_seed(self.seed, "restart", self.restarts))
        except Exception as e:
            raise EnvError(f"{self.owner}: env {_env_name(self.ctx.env)} raised ({type(error).__name__}: {error}) "
                           f"and could not be made anew ({type(e).__name__}: {e}); check the env's setup") from e

    def take_restarts(self) -> int:
        """Restarts since the last call (what a node reports per call; the driver adds them up)."""
        new, self._reported = self.restarts - self._reported, self.restarts
        return new

    def reset(self, seed: int | None = None) -> np.ndarray:
        return self.env.reset(seed=seed)

    def close(self) -> None:
        self.env.close()


def _env_name(env: Any) -> str:
    return env if isinstance(env, str) else getattr(env, "__name__", type(env).__name__)


class ActorNode:
    """Steps a vector env with one actor and reports episodes and the adder's data."""

    def __init__(self, ctx: NodeContext, actor_id: int, num_actors: int, env_seed: int, actor_seed: int) -> None:
        self.builder = ctx.builder()
        self.actor_id = actor_id
        self.env = RestartingEnv(ctx, self.builder.num_envs, env_seed, f"actor {actor_id}")
        self.env_seed = env_seed
        self.version = -1  # the parameter version pulled last (pull)
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
        while True:
            try:
                return self._run(num_steps)
            except EnvRestarted:  # the episodes in progress are lost, the run goes on with a new env
                self._new_episodes(self.env.obs)

    def _run(self, num_steps: int) -> tuple[ActorReport, Any]:
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

    def pull(self, variables: Any) -> None:
        """Adopt the newest snapshot of the variable server ``variables`` if it is newer than the one held."""
        from shoal.services.variables import pull_snapshot

        snap = pull_snapshot(variables, self.version)
        if snap is not None:
            self.actor.load_variables(snap.version, snap.tensors())
            self.version = snap.version

    def _new_episodes(self, obs: np.ndarray) -> None:
        """Every env copy starts a new episode at ``obs`` (the actor drops partial data; returns restart at 0)."""
        self.actor.observe_first(obs)
        if self.reward_norm is not None:
            self.reward_norm.new_episodes()

    def on_restart(self) -> None:
        """Called by a backend that restarted this node's process: its envs start from a new seed
        (the constructor ran with the first process's arguments) and it pulls parameters afresh."""
        self.resets += 1
        self._new_episodes(self.env.reset(seed=derive_seed(self.env_seed, "process", os.getpid())))

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
        self.actor.observe_first(self.env.reset(seed=self.env_seed + 7919 * self.resets))

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
