"""The on-policy actor: batched action selection into a preallocated rollout buffer."""

from __future__ import annotations

import numpy as np
import torch

from shoal.agents.pg.inference import NumpyEngine, make_engine
from shoal.agents.pg.networks import ActorCritic
from shoal.core.interfaces import Actor
from shoal.core.types import EnvSpec, Rollout, StepResult


class RolloutActor(Actor):
    """Samples actions for ``num_envs`` copies and records a ``[T, B]`` rollout.

    Everything is written into numpy arrays allocated once; :meth:`drain` hands out
    tensors holding a copy and starts over. Sampling uses the actor's own generator,
    so an actor's behaviour depends only on its seed, not on where it runs.
    """

    def __init__(self, networks: ActorCritic, spec: EnvSpec, rollout_length: int, num_envs: int, seed: int,
                 engine: str = "auto", values_in_learner: bool = False) -> None:
        self.net = networks
        self.spec = spec
        self.T, self.B = rollout_length, num_envs
        self.engine = make_engine(networks, num_envs, seed, engine)
        # With values_in_learner the actor only evaluates the policy; the learner computes
        # V for the whole rollout in one batched pass (see Rollout.fill_values).
        self.values_in_learner = values_in_learner
        self.final_rows: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.version = 0
        T, B = self.T, self.B
        obs_dtype = np.uint8 if spec.obs_dtype == np.uint8 else np.float32
        self.obs = np.zeros((T, B, *spec.obs_shape), dtype=obs_dtype)
        self.actions = np.zeros((T, B) if spec.discrete else (T, B, spec.num_actions),
                                dtype=np.int64 if spec.discrete else np.float32)
        self.log_probs = np.zeros((T, B), np.float32)
        self.values = np.zeros((T, B), np.float32)
        self.rewards = np.zeros((T, B), np.float32)
        self.terminated = np.zeros((T, B), np.float32)
        self.truncated = np.zeros((T, B), np.float32)
        self.final_values = np.zeros((T, B), np.float32)
        self.params: np.ndarray | None = None  # policy parameters per step, allocated on first use
        self.t = 0
        self.last_obs: np.ndarray | None = None

    def load_variables(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Adopt the learner's parameters (copied in place, so numpy views stay valid)."""
        self.net.load_state_dict(state_dict)
        self.version = version

    def observe_first(self, obs: np.ndarray) -> None:
        """Start new episodes in every copy; a partly recorded rollout is dropped."""
        self.last_obs = obs
        self.t = 0
        self.final_rows = []

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        t = self.t
        self.obs[t] = obs
        action, logp, value, params = self.engine.act(self.obs[t], not self.values_in_learner)
        self.actions[t] = action
        self.log_probs[t] = logp
        if value is not None:
            self.values[t] = value
        if self.params is None:
            self.params = np.zeros((self.T, self.B, params.shape[-1]), np.float32)
        self.params[t] = params
        return action

    def observe(self, action: np.ndarray, step: StepResult) -> None:
        t = self.t
        self.rewards[t] = step.reward
        self.terminated[t] = step.terminated
        self.truncated[t] = step.truncated
        if step.truncated.any():
            idx = np.flatnonzero(step.truncated & ~step.terminated)
            if self.values_in_learner:
                self.final_rows.append((t, idx, step.final_obs[idx].copy()))
            else:
                self.final_values[t] = 0.0
                self.final_values[t, idx] = self.engine.value(np.ascontiguousarray(step.final_obs[idx]))
        elif not self.values_in_learner:
            self.final_values[t] = 0.0
        self.last_obs = step.next_obs
        self.t += 1

    def drain(self) -> Rollout:
        """The rollout recorded since the last drain (exactly ``T`` steps)."""
        if self.t != self.T:
            raise RuntimeError(f"rollout has {self.t} of {self.T} steps; run the actor for rollout_length steps")
        self.t = 0
        assert self.params is not None  # allocated by the first of the T steps recorded
        c = np.copy  # the buffers are reused for the next rollout
        if self.values_in_learner:
            rows, self.final_rows = self.final_rows, []
            obs_shape = self.obs.shape[2:]
            return Rollout(c(self.obs), c(self.actions), c(self.log_probs), None, c(self.rewards), c(self.terminated),
                           c(self.truncated), None, None, {"policy_params": c(self.params)}, policy_version=self.version,
                           last_obs=np.array(self.last_obs, dtype=self.obs.dtype),
                           final_t=np.array([t for t, idx, _ in rows for _ in idx], np.int64),
                           final_b=np.concatenate([idx for _, idx, _ in rows]).astype(np.int64) if rows else np.zeros(0, np.int64),
                           final_obs=np.concatenate([o for _, _, o in rows]).astype(self.obs.dtype) if rows
                           else np.zeros((0, *obs_shape), self.obs.dtype))
        bootstrap = self.engine.value(np.ascontiguousarray(self.last_obs, dtype=self.obs.dtype))
        return Rollout(c(self.obs), c(self.actions), c(self.log_probs), c(self.values), c(self.rewards),
                       c(self.terminated), c(self.truncated), c(self.final_values), np.asarray(bootstrap, np.float32),
                       {"policy_params": c(self.params)}, policy_version=self.version)

    def state(self) -> dict:
        s = self.engine.get_state()
        return {"engine": s if isinstance(self.engine, NumpyEngine) else {"torch": s}, "version": self.version}

    def load_state(self, state: dict) -> None:
        s = state["engine"]
        self.engine.set_state(s["torch"] if "torch" in s else s)
        self.version = int(state["version"])


class GreedyPolicy:
    """Deterministic (mode) actions of an actor-critic network, numpy in and out."""

    def __init__(self, net: ActorCritic) -> None:
        self.net = net

    @torch.inference_mode()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        params, _ = self.net(torch.as_tensor(obs))
        return self.net.dist.mode(params).numpy()


class SamplingPolicy:
    """Stochastic actions of an actor-critic network."""

    def __init__(self, net: ActorCritic, seed: int = 0) -> None:
        self.net = net
        self.gen = torch.Generator().manual_seed(seed)

    @torch.inference_mode()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        params, _ = self.net(torch.as_tensor(obs))
        return self.net.dist.sample(params, self.gen).numpy()
