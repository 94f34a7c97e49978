"""The ``seed`` topology (Espeholt et al. 2020, SEED RL): env workers without networks.

Env workers only step their envs: every vector step they send the observations (and the
outcome of the previous step) to the learner node and get actions back. The learner node
runs a batched inference service: requests from many workers are gathered into one network
call (``max_batch`` observations or ``max_wait_s``), each worker samples with its own
generator (identical models would otherwise explore alike), and the trajectories are kept
server-side: a worker's unroll is assembled where the learner trains on it, so neither
observations nor parameters travel back and forth. The learner trains on finished unrolls
with V-trace (IMPALA's loss; a little lag remains between inference and training).

On the cooperative in-process backend workers step one after the other and inference runs
per request (deterministic); on the threaded and Ray backends the learner node serves all
workers concurrently and batches them.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from shoal.backends.base import Backend
from shoal.config import positive, require
from shoal.core.device import learner_gpus
from shoal.core.seeding import derive_seed
from shoal.core.types import ActorReport, Rollout
from shoal.errors import ConfigError
from shoal.nets.heads import PolicyDistribution
from shoal.services.inference import InferenceServer
from shoal.services.queue import QueueEmpty, TrajectoryQueue
from shoal.settings import RunConfig
from shoal.topologies import IterationReport
from shoal.topologies.asynchronous import AsyncProgram, actor_critic_misfit, idle_report
from shoal.topologies.impala import QueueLearnerNode
from shoal.topologies.nodes import EnvRestarted, NodeContext, RestartingEnv, RewardStatsState


@dataclass
class SeedSettings:
    """The topology's own settings."""

    max_batch: int = 0
    """Most observations per inference call (0: every worker's envs at once)."""
    max_wait_s: float = 0.002
    """Longest a request waits for others before inference runs."""
    batch_unrolls: int = 0
    """Unrolls per learner batch (0: one per worker)."""
    queue_size: int = 0
    """Most finished unrolls waiting for the learner (0: four batches)."""
    steps_per_call: int = 128
    """Vector steps in a worker's first call on concurrent backends (later calls adapt to last about a second)."""
    max_policy_lag: int = 32
    """Unrolls whose oldest step is this many versions behind the learner are dropped."""

    def __post_init__(self) -> None:
        positive(self, "steps_per_call", "max_policy_lag")
        require(self.max_batch >= 0 and self.batch_unrolls >= 0 and self.queue_size >= 0 and self.max_wait_s >= 0,
                "max_batch, batch_unrolls, queue_size and max_wait_s must be >= 0")


class EnvWorkerNode(RewardStatsState):
    """Steps a vector env; asks ``server`` for every action (it holds no network)."""

    def __init__(self, ctx: NodeContext, worker_id: int, num_envs: int, env_seed: int, server: Any) -> None:
        from shoal.core.threads import set_threads

        set_threads(ctx.torch_threads)
        self.worker_id, self.server = worker_id, server
        self.env = RestartingEnv(ctx, num_envs, env_seed, f"env worker {worker_id}")
        self.env_seed = env_seed
        spec = ctx.env_spec
        self.low, self.high = (None, None) if spec.discrete else (spec.action_low, spec.action_high)
        self.prev: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.fresh = True  # the server may hold a partial unroll of this worker's earlier envs (or process)
        # This process's token: the server ignores calls of an earlier incarnation of the worker that
        # were still in flight when it died (a put or an inference may have held them up).
        self.incarnation = uuid.uuid4().int & (2**62 - 1)
        self.reward_norm = ctx.builder().make_reward_normalizer(num_envs)  # normalize_reward: the learner sees scaled rewards

    def on_restart(self) -> None:
        """Called by a backend that restarted this node's process: new env seed; the server drops the old unroll."""
        self.env.reset(seed=derive_seed(self.env_seed, "process", os.getpid()))
        if self.reward_norm is not None:
            self.reward_norm.new_episodes()

    def run(self, num_steps: int) -> ActorReport:
        """``num_steps`` vector steps; returns steps, finished episodes and the time spent waiting for
        actions (idle) apart from the time the server held a finished unroll for room in its queue."""
        returns: list[float] = []
        lengths: list[int] = []
        waited = blocked = 0.0
        t0 = time.perf_counter()
        obs = self.env.obs
        done = 0
        while done < num_steps:
            w = time.perf_counter()
            action, full_wait = self.server.call("act", self.worker_id, obs, self.prev, self.fresh,
                                                 self.incarnation).result()
            took = time.perf_counter() - w
            blocked += min(full_wait, took)
            waited += took - min(full_wait, took)
            self.fresh = False
            try:
                step = self.env.step(action if self.low is None else np.clip(action, self.low, self.high))
            except EnvRestarted:  # the server drops this worker's partial unroll at the next request
                self.prev, self.fresh, obs = None, True, self.env.obs
                if self.reward_norm is not None:
                    self.reward_norm.new_episodes()
                continue
            done += 1
            ended = step.extras.get("episodes")
            if ended is not None:
                returns.extend(ended.returns.tolist())
                lengths.extend(ended.lengths.tolist())
            # Only the truncated copies' final observations travel (they bootstrap the value there).
            cut = np.flatnonzero(step.truncated & ~step.terminated)
            # episode returns above are the env's own; the learner learns from the scaled rewards
            reward = step.reward if self.reward_norm is None else self.reward_norm(step.reward, step.done)
            self.prev = (reward, step.terminated, step.truncated, cut, step.final_obs[cut])
            obs = step.next_obs
        return ActorReport(num_steps * self.env.num_envs, returns, lengths,
                           data=idle_report(time.perf_counter() - t0, waited, blocked, self.env.take_restarts()),
                           actor_id=self.worker_id)

    def close(self) -> None:
        self.env.close()


class _Trajectory:
    """One worker's unroll being assembled on the server: ``T`` steps of what the policy chose and saw."""

    def __init__(self, T: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype: Any, action_shape: tuple[int, ...],
                 action_dtype: Any, params_dim: int) -> None:
        self.T = T
        self.obs = np.zeros((T, num_envs, *obs_shape), obs_dtype)
        self.actions = np.zeros((T, num_envs, *action_shape), action_dtype)
        self.log_probs = np.zeros((T, num_envs), np.float32)
        self.params = np.zeros((T, num_envs, params_dim), np.float32)
        self.rewards = np.zeros((T, num_envs), np.float32)
        self.terminated = np.zeros((T, num_envs), np.float32)
        self.truncated = np.zeros((T, num_envs), np.float32)
        self.final: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.versions: list[int] = []
        self.t = 0

    def outcome(self, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, cut: np.ndarray,
                final_rows: np.ndarray) -> None:
        """The outcome of the last recorded step; ``cut``: copies truncated there, ``final_rows`` their final observations."""
        t = self.t - 1
        self.rewards[t], self.terminated[t], self.truncated[t] = reward, terminated, truncated
        if len(cut):
            self.final.append((t, np.asarray(cut, np.int64), np.array(final_rows, copy=True)))

    def record(self, obs: np.ndarray, action: np.ndarray, logp: np.ndarray, params: np.ndarray, version: int) -> None:
        t = self.t
        self.obs[t], self.actions[t], self.log_probs[t], self.params[t] = obs, action, logp, params
        self.versions.append(version)
        self.t += 1

    def finish(self, last_obs: np.ndarray) -> Rollout:
        c = np.copy
        rows, self.final = self.final, []
        r = Rollout(c(self.obs), c(self.actions), c(self.log_probs), None, c(self.rewards), c(self.terminated),
                    c(self.truncated), None, None, {"policy_params": c(self.params)}, policy_version=min(self.versions),
                    last_obs=np.array(last_obs, dtype=self.obs.dtype),
                    final_t=np.array([t for t, idx, _ in rows for _ in idx], np.int64),
                    final_b=np.concatenate([idx for _, idx, _ in rows]).astype(np.int64) if rows else np.zeros(0, np.int64),
                    final_obs=np.concatenate([o for _, _, o in rows]).astype(self.obs.dtype) if rows
                    else np.zeros((0, *self.obs.shape[2:]), self.obs.dtype))
        self.clear()
        return r

    def clear(self) -> None:
        """Drop the steps recorded so far (the envs restarted: those episodes are gone)."""
        self.final, self.versions, self.t = [], [], 0


class SeedLearnerNode(QueueLearnerNode):
    """The learner, its batched inference service and the server-side trajectories, in one node."""

    def __init__(self, ctx: NodeContext, num_workers: int, settings: SeedSettings, batch_unrolls: int,
                 concurrent: bool) -> None:
        super().__init__(ctx, settings.max_policy_lag, batch_unrolls)
        if not self.builder.rollout_actor_critic:
            raise ConfigError(f"the seed topology trains actor-critic algorithms (impala, appo); {ctx.algo} is not one")
        b, spec = self.builder, ctx.env_spec
        self.settings = settings
        self.T, self.num_envs = b.steps_per_iteration, b.num_envs
        # Inference runs on a copy on the inference device (by default the learner's), refreshed after
        # every update (never on weights being updated); only the sampling, with each worker's CPU
        # generator, is on the CPU.
        self.device = next(self.networks.parameters()).device
        self.infer_device = torch.device(ctx.inference_on)
        self.infer_net = b.make_networks().to(self.infer_device)
        self.infer_net.load_state_dict(self.networks.state_dict())
        self.infer_version = self.learner.version
        self._infer_lock = threading.Lock()
        self.gens = [torch.Generator().manual_seed(derive_seed(ctx.seed, "seed-worker", w)) for w in range(num_workers)]
        with torch.no_grad():
            probe = self.infer_net(torch.zeros((1, *spec.obs_shape), dtype=torch.float32
                                               if spec.obs_dtype != np.uint8 else torch.uint8, device=self.infer_device))[0]
        act_shape = () if spec.discrete else (spec.num_actions,)
        act_dtype = np.int64 if spec.discrete else np.float32
        obs_dtype = np.uint8 if spec.obs_dtype == np.uint8 else np.float32
        self.trajectories = [_Trajectory(self.T, self.num_envs, spec.obs_shape, obs_dtype, act_shape, act_dtype,
                                         probe.shape[-1]) for _ in range(num_workers)]
        self._worker_locks = [threading.Lock() for _ in range(num_workers)]
        self.incarnations = [0] * num_workers  # each worker's current process token (set by its first call)
        capacity = settings.queue_size or 4 * batch_unrolls
        self.queue = TrajectoryQueue(capacity, overflow="block", timeout=None, name="seed-unrolls")
        max_batch = settings.max_batch or num_workers * self.num_envs
        self.server = InferenceServer(self._policy, max_batch, settings.max_wait_s, name="seed") if concurrent else None

    @torch.no_grad()
    def _policy(self, obs: np.ndarray, worker_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One network call for a batch of many workers' observations; each worker samples with its own generator."""
        with self._infer_lock:
            params = self.infer_net(torch.as_tensor(obs).to(self.infer_device))[0].cpu()
            version = self.infer_version
        dist = cast(PolicyDistribution, self.infer_net.dist)  # an actor-critic network's (checked in __init__)
        actions = torch.empty((len(obs), *self.trajectories[0].actions.shape[2:]),
                              dtype=torch.int64 if self.trajectories[0].actions.dtype == np.int64 else torch.float32)
        for w in np.unique(worker_ids):
            rows = torch.as_tensor(np.flatnonzero(worker_ids == w))
            actions[rows] = dist.sample(params[rows], self.gens[int(w)])
        logp = dist.log_prob(params, actions)
        return actions.numpy(), logp.numpy(), params.numpy(), np.full(len(obs), version)

    def act(self, worker_id: int, obs: np.ndarray, prev: tuple | None, restart: bool = False,
            incarnation: int = 0) -> tuple[np.ndarray, float]:
        """Record the previous step's outcome, choose actions for ``obs``, hand out finished unrolls.

        Returns the actions and the seconds a finished unroll waited for room in the queue
        (backpressure on that worker, for as long as the queue is open). ``restart``: the worker's
        envs (or its process) started anew, so the steps recorded for it so far belong to episodes
        that are gone and are dropped; calls of an older ``incarnation`` of the worker (in flight
        when its process died) are answered and otherwise ignored.
        """
        traj = self.trajectories[worker_id]
        with self._worker_locks[worker_id]:
            if restart:
                self.incarnations[worker_id] = incarnation
                traj.clear()
            if incarnation != self.incarnations[worker_id]:
                return np.zeros_like(traj.actions[0]), 0.0
            if prev is not None and traj.t > 0:
                traj.outcome(*prev)
            item = traj.finish(obs).to_item() if traj.t == self.T else None
        full_wait = 0.0 if item is None else (self.queue.put_timed(item, timeout=None) or 0.0)
        if self.server is not None:
            action, logp, params, version = self.server.infer(worker_id, obs, timeout=60.0)
        else:
            action, logp, params, version = self._policy(np.asarray(obs), np.full(len(obs), worker_id))
        with self._worker_locks[worker_id]:
            if incarnation == self.incarnations[worker_id]:  # not superseded while it waited
                traj.record(obs, action, logp, params, int(version[0]))
        return action, full_wait

    def queued(self) -> int:
        return len(self.queue)

    def _next_batch(self, timeout: float) -> dict[str, np.ndarray] | None:
        try:
            return self.queue.get(self.batch_unrolls, timeout=timeout)
        except QueueEmpty:
            return None

    def _after_update(self, restored: bool = False) -> None:
        with self._infer_lock:  # a device-to-device copy of the new version
            self.infer_net.load_state_dict(self.networks.state_dict())
            self.infer_version = self.learner.version

    def train(self, num_batches: int, timeout: float, seconds: float | None = None) -> dict[str, float]:
        out = super().train(num_batches, timeout, seconds)
        if self.server is not None:
            out.update(self.server.metrics())
        return out

    def state(self) -> dict[str, Any]:
        with self._lock:
            s = super().state()
            s["worker_generators"] = [g.get_state() for g in self.gens]
            return s

    def load_state(self, state: dict[str, Any]) -> None:
        with self._lock:
            super().load_state(state)
            for g, s in zip(self.gens, state.get("worker_generators", [])):
                g.set_state(s)

    def release(self) -> None:
        """Release the workers waiting for room in the queue (the run is stopping)."""
        self.queue.close()

    def close(self) -> None:
        self.queue.close()
        if self.server is not None:
            self.server.close()


class SeedProgram(AsyncProgram):
    """SEED's nodes: env workers and one learner node with inference inside."""

    def __init__(self, ctx: NodeContext, run: RunConfig, backend: Backend, settings: SeedSettings | None = None) -> None:
        self.ctx = ctx
        self.seed_settings = s = settings or SeedSettings()
        self.builder = ctx.builder()
        n = run.num_actors
        self.batch_unrolls = s.batch_unrolls or n
        capacity = s.queue_size or 4 * self.batch_unrolls
        require(capacity >= self.batch_unrolls + n, f"queue_size {capacity} must hold a batch ({self.batch_unrolls}) "
                f"plus one unroll per worker ({n}); raise queue_size")
        self._init_async(backend, n, self.builder.num_envs, run.steps, s.steps_per_call, run.max_restarts)
        self.learner = backend.spawn(SeedLearnerNode, ctx, n, s, self.batch_unrolls, self.concurrent, name="learner",
                                     num_gpus=max(learner_gpus(ctx.device), learner_gpus(ctx.inference_on)),
                                     concurrency=n + 2 if self.concurrent else 1)
        self.actors = [self._spawn_actor(EnvWorkerNode, ctx, i, self.builder.num_envs, derive_seed(run.seed, "env", i),
                                         self.learner, name=f"env-worker-{i}") for i in range(n)]
        self._eval_net = self.builder.make_networks()

    def _start_actor(self, i: int, units: int) -> Any:
        return self.actors[i].call("run", units)

    def _start_learner(self) -> Any:
        return self.learner.call("train", 1_000_000, 1.0, self.call_seconds)

    def _cooperative_round(self) -> IterationReport:
        reports = self.backend.get([a.call("run", self.builder.steps_per_iteration) for a in self.actors])
        queued = self.backend.get(self.learner.call("queued"))
        metrics = self.backend.get(self.learner.call("train", queued // self.batch_unrolls, 0.0))
        return self._report(reports, metrics)

    def _actor_state_kept(self) -> bool:
        # env workers hold envs and, with normalize_reward, their reward statistics; the learner node holds
        # every generator
        return self.builder.make_reward_normalizer(1) is not None

    def _release(self) -> None:
        self.backend.get(self.learner.call("release"))


#: The topology's settings (``topology.KEY=VALUE``; printed under ``topology:`` in config.yaml).
Settings = SeedSettings


def make_program(ctx: NodeContext, run: RunConfig, backend: Backend, settings: SeedSettings | None = None) -> SeedProgram:
    """Build the seed topology."""
    return SeedProgram(ctx, run, backend, settings)


#: Fits every actor-critic algorithm that records rollouts with behaviour log-probs.
misfit = actor_critic_misfit
