"""The ``ga3c`` topology (Babaeizadeh et al. 2017): a predictor and a trainer, each batching its queue.

Agents (env workers without networks) put their observations on the prediction queue of a
predictor node, which batches requests from many agents into one network call and answers
each with its actions; agents assemble their own experience and put each finished rollout
on the training queue, from which the trainer takes batches. The predictor holds its own
copy of the network and adopts the trainer's newest version every ``predictor_pull_every``
batches, so it acts with parameters a little behind the trainer's: that policy lag
(trainer version minus the version the rollout was predicted with) is a metric.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from shoal.backends.base import Backend
from shoal.config import positive, require
from shoal.core import store
from shoal.core.device import learner_gpus
from shoal.core.seeding import derive_seed
from shoal.core.types import ActorReport
from shoal.nets.heads import PolicyDistribution
from shoal.services.inference import InferenceServer
from shoal.services.variables import VariableServer
from shoal.settings import RunConfig
from shoal.topologies import IterationReport
from shoal.topologies.asynchronous import AsyncProgram, actor_critic_misfit, idle_report
from shoal.topologies.impala import ImpalaLearnerNode, ImpalaSettings, QueueNode
from shoal.topologies.nodes import EnvRestarted, NodeContext, RestartingEnv, RewardStatsState
from shoal.topologies.seed import _Trajectory


@dataclass
class GA3CSettings:
    """The topology's own settings."""

    max_batch: int = 0
    """Most observations per prediction (0: every agent's envs at once)."""
    max_wait_s: float = 0.002
    """Longest a prediction request waits for others."""
    batch_unrolls: int = 0
    """Rollouts per training batch (0: one per agent)."""
    queue_size: int = 0
    """Most rollouts on the training queue (0: four batches)."""
    predictor_pull_every: int = 4
    """Prediction batches between the predictor's parameter pulls."""
    steps_per_call: int = 128
    """Vector steps in an agent's first call on concurrent backends (later calls adapt to last about a second)."""
    max_policy_lag: int = 32
    """Rollouts predicted with parameters this many versions behind the trainer are dropped."""

    def __post_init__(self) -> None:
        positive(self, "predictor_pull_every", "steps_per_call", "max_policy_lag")
        require(self.max_batch >= 0 and self.batch_unrolls >= 0 and self.queue_size >= 0 and self.max_wait_s >= 0,
                "max_batch, batch_unrolls, queue_size and max_wait_s must be >= 0")


class PredictorNode:
    """Batched prediction with its own network copy, pulled from the variable server now and then."""

    def __init__(self, ctx: NodeContext, num_agents: int, variables: Any, settings: GA3CSettings, concurrent: bool) -> None:
        from shoal.core.threads import set_threads

        set_threads(ctx.torch_threads)
        self.builder = ctx.builder()
        self.device = torch.device(ctx.inference_on)
        self.net = self.builder.make_networks().to(self.device)
        self.variables, self.settings = variables, settings
        self.version = -1
        self.batches = 0
        self.gens = [torch.Generator().manual_seed(derive_seed(ctx.seed, "ga3c-agent", a)) for a in range(num_agents)]
        self._pull()
        max_batch = settings.max_batch or num_agents * self.builder.num_envs
        self.server = InferenceServer(self._predict, max_batch, settings.max_wait_s, name="predictor") if concurrent else None

    def _pull(self) -> None:
        ref = self.variables.call("get_ref", self.version).result()
        if ref is not None:
            snap = store.get(ref[1])
            self.net.load_state_dict(snap.tensors())
            self.version = snap.version

    @torch.no_grad()
    def _predict(self, obs: np.ndarray, agent_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self.batches % self.settings.predictor_pull_every == 0:
            self._pull()
        self.batches += 1
        params = self.net(torch.as_tensor(obs).to(self.device))[0].cpu()  # sampling: on the CPU, per agent
        dist = cast(PolicyDistribution, self.net.dist)  # ga3c runs actor-critic builders only
        groups = _rows_by_agent(agent_ids)  # each agent samples with its own generator
        actions = torch.cat([dist.sample(params[rows], self.gens[a]) for a, rows in groups])
        out = torch.empty_like(actions)
        out[torch.as_tensor(np.concatenate([rows for _, rows in groups]))] = actions
        return out.numpy(), dist.log_prob(params, out).numpy(), params.numpy(), np.full(len(obs), self.version)

    def predict(self, agent_id: int, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Actions (and their log-probs, distribution parameters, version) for one agent's observations."""
        if self.server is not None:
            return self.server.infer(agent_id, obs, timeout=60.0)
        return self._predict(np.asarray(obs), np.full(len(obs), agent_id))

    def metrics(self) -> dict[str, float]:
        out = {"predictor_version": float(self.version)}
        if self.server is not None:
            out.update(self.server.metrics())
        return out

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _rows_by_agent(agent_ids: np.ndarray) -> list[tuple[int, np.ndarray]]:
    return [(int(a), np.flatnonzero(agent_ids == a)) for a in np.unique(agent_ids)]


class AgentNode(RewardStatsState):
    """Steps a vector env, asks the predictor for actions, and puts finished rollouts on the training queue."""

    def __init__(self, ctx: NodeContext, agent_id: int, env_seed: int, predictor: Any, queue: Any) -> None:
        from shoal.core.threads import set_threads

        set_threads(ctx.torch_threads)
        b = ctx.builder()
        spec = ctx.env_spec
        self.agent_id, self.predictor, self.queue = agent_id, predictor, queue
        self.env = RestartingEnv(ctx, b.num_envs, env_seed, f"agent {agent_id}")
        self.env_seed = env_seed
        self.low, self.high = (None, None) if spec.discrete else (spec.action_low, spec.action_high)
        with torch.no_grad():  # the width of the policy's parameters; the agent keeps no network
            probe = b.make_networks()(torch.zeros((1, *spec.obs_shape),
                                                 dtype=torch.uint8 if spec.obs_dtype == np.uint8 else torch.float32))[0]
        params_dim = int(probe.shape[-1])
        self.traj = _Trajectory(b.steps_per_iteration, b.num_envs, spec.obs_shape,
                                np.uint8 if spec.obs_dtype == np.uint8 else np.float32,
                                () if spec.discrete else (spec.num_actions,), np.int64 if spec.discrete else np.float32,
                                params_dim)
        self.reward_norm = b.make_reward_normalizer(b.num_envs)  # normalize_reward: the trainer sees scaled rewards

    def on_restart(self) -> None:
        """Called by a backend that restarted this node's process: its envs start from a new seed."""
        self.env.reset(seed=derive_seed(self.env_seed, "process", os.getpid()))
        if self.reward_norm is not None:
            self.reward_norm.new_episodes()

    def run(self, num_steps: int) -> ActorReport:
        """``num_steps`` vector steps; idle time (waiting for predictions or handing rollouts over) and
        backpressure (waiting for room in a full training queue) are reported apart."""
        traj = self.traj
        returns: list[float] = []
        lengths: list[int] = []
        waited = blocked = 0.0
        t0 = time.perf_counter()
        obs = self.env.obs
        done = 0
        while done < num_steps:
            if traj.t == traj.T:
                w = time.perf_counter()
                full_wait = self.queue.call("put", traj.finish(obs).to_item()).result()  # waits for room while open
                took = time.perf_counter() - w
                if full_wait is None:
                    break
                blocked += min(full_wait, took)
                waited += took - min(full_wait, took)
            w = time.perf_counter()
            action, logp, params, version = self.predictor.call("predict", self.agent_id, obs).result()
            waited += time.perf_counter() - w
            traj.record(obs, action, logp, params, int(version[0]))
            try:
                step = self.env.step(action if self.low is None else np.clip(action, self.low, self.high))
            except EnvRestarted:  # the rollout in progress belongs to episodes that are gone
                traj.clear()
                obs = self.env.obs
                if self.reward_norm is not None:
                    self.reward_norm.new_episodes()
                continue
            cut = np.flatnonzero(step.truncated & ~step.terminated)
            # episode returns below are the env's own; the trainer learns from the scaled rewards
            reward = step.reward if self.reward_norm is None else self.reward_norm(step.reward, step.done)
            traj.outcome(reward, step.terminated, step.truncated, cut, step.final_obs[cut])
            done += 1
            ended = step.extras.get("episodes")
            if ended is not None:
                returns.extend(ended.returns.tolist())
                lengths.extend(ended.lengths.tolist())
            obs = step.next_obs
        return ActorReport(done * self.env.num_envs, returns, lengths,
                           data=idle_report(time.perf_counter() - t0, waited, blocked, self.env.take_restarts()),
                           actor_id=self.agent_id)

    def close(self) -> None:
        self.env.close()


class GA3CProgram(AsyncProgram):
    """GA3C's nodes: agents, a predictor, a trainer, and the training queue and variables between them."""

    def __init__(self, ctx: NodeContext, run: RunConfig, backend: Backend, settings: GA3CSettings | None = None) -> None:
        self.ctx = ctx
        self.ga3c_settings = g = settings or GA3CSettings()
        self.builder = ctx.builder()
        n = run.num_actors
        self.batch_unrolls = g.batch_unrolls or n
        capacity = g.queue_size or 4 * self.batch_unrolls
        require(capacity >= self.batch_unrolls + n, f"queue_size {capacity} must hold a batch ({self.batch_unrolls}) "
                f"plus one rollout per agent ({n}); raise queue_size")
        self.settings = ImpalaSettings(batch_unrolls=self.batch_unrolls, queue_size=capacity, max_policy_lag=g.max_policy_lag)
        self._init_async(backend, n, self.builder.num_envs, run.steps, g.steps_per_call, run.max_restarts)
        conc = max(4, 2 * n + 2)
        self.queue = backend.spawn(QueueNode, capacity, name="training-queue", num_cpus=0, concurrency=conc)
        self.variables = backend.spawn(VariableServer, name="variables", num_cpus=0, concurrency=conc)
        self.learner = backend.spawn(ImpalaLearnerNode, ctx, self.queue, self.variables, self.settings, self.batch_unrolls,
                                     name="trainer", num_gpus=self._gpu_share(learner_gpus(ctx.device)))
        self.predictor = backend.spawn(PredictorNode, ctx, n, self.variables, g, self.concurrent, name="predictor",
                                       num_gpus=self._gpu_share(learner_gpus(ctx.inference_on)),
                                       concurrency=n + 2 if self.concurrent else 1)
        self.actors = [self._spawn_actor(AgentNode, ctx, i, derive_seed(run.seed, "env", i), self.predictor, self.queue,
                                         name=f"agent-{i}") for i in range(n)]
        self._eval_net = self.builder.make_networks()

    def _gpu_share(self, gpus: float) -> float:
        """A trainer and a predictor both on CUDA share one GPU (half each), so one GPU runs GA3C."""
        both = learner_gpus(self.ctx.device) and learner_gpus(self.ctx.inference_on)
        return gpus / 2 if both else gpus

    def _start_actor(self, i: int, units: int) -> Any:
        return self.actors[i].call("run", units)

    def _start_learner(self) -> Any:
        return self.learner.call("train", 1_000_000, 1.0, self.call_seconds)

    def _extra_metrics(self) -> dict[str, float]:
        return self.backend.get(self.predictor.call("metrics"))

    def _cooperative_round(self) -> IterationReport:
        reports = self.backend.get([a.call("run", self.builder.steps_per_iteration) for a in self.actors])
        queued = self.backend.get(self.queue.call("size"))
        metrics = self.backend.get(self.learner.call("train", queued // self.batch_unrolls, 0.0))
        return self._report(reports, metrics)

    def _release(self) -> None:
        self.backend.get(self.queue.call("close"))

    def _actor_state_kept(self) -> bool:
        # agents hold envs, their unfinished rollout and, with normalize_reward, their reward statistics
        return self.builder.make_reward_normalizer(1) is not None


#: The topology's settings (``topology.KEY=VALUE``; printed under ``topology:`` in config.yaml).
Settings = GA3CSettings


def make_program(ctx: NodeContext, run: RunConfig, backend: Backend, settings: GA3CSettings | None = None) -> GA3CProgram:
    """Build the ga3c topology."""
    return GA3CProgram(ctx, run, backend, settings)


#: Fits every actor-critic algorithm that records rollouts with behaviour log-probs.
misfit = actor_critic_misfit
