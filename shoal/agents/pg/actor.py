"""The on-policy actor: batched action selection into a preallocated rollout buffer."""

from __future__ import annotations

import numpy as np
import torch

from shoal.core.interfaces import Actor
from shoal.core.types import EnvSpec, Rollout, StepResult
from shoal.agents.pg.networks import ActorCritic


class RolloutActor(Actor):
    """Samples actions for ``num_envs`` copies and records a ``[T, B]`` rollout.

    Everything is written into tensors allocated once; :meth:`drain` hands out a
    copy and starts over. Sampling uses the actor's own generator, so an actor's
    behaviour depends only on its seed, not on where it runs.
    """

    def __init__(self, networks: ActorCritic, spec: EnvSpec, rollout_length: int, num_envs: int, seed: int) -> None:
        self.net = networks
        self.spec = spec
        self.T, self.B = rollout_length, num_envs
        self.gen = torch.Generator().manual_seed(seed)
        self.version = 0
        obs_dtype = torch.uint8 if spec.obs_dtype == np.uint8 else torch.float32
        T, B = self.T, self.B
        self.obs = torch.zeros((T, B, *spec.obs_shape), dtype=obs_dtype)
        self.actions = torch.zeros((T, B) if spec.discrete else (T, B, spec.num_actions),
                                   dtype=torch.int64 if spec.discrete else torch.float32)
        self.log_probs = torch.zeros(T, B)
        self.values = torch.zeros(T, B)
        self.rewards = torch.zeros(T, B)
        self.terminated = torch.zeros(T, B)
        self.truncated = torch.zeros(T, B)
        self.final_values = torch.zeros(T, B)
        self.params: torch.Tensor | None = None  # policy parameters per step, allocated on first use
        self.t = 0
        self.last_obs: np.ndarray | None = None

    def load_variables(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Adopt the learner's parameters."""
        self.net.load_state_dict(state_dict)
        self.version = version

    def observe_first(self, obs: np.ndarray) -> None:
        self.last_obs = obs

    @torch.inference_mode()
    def select_action(self, obs: np.ndarray) -> np.ndarray:
        t = self.t
        o = torch.from_numpy(obs)
        self.obs[t].copy_(o)
        params, value = self.net(self.obs[t])
        action = self.net.dist.sample(params, self.gen)
        self.actions[t] = action
        self.log_probs[t] = self.net.dist.log_prob(params, action)
        self.values[t] = value
        if self.params is None:
            self.params = torch.zeros((self.T, self.B, params.shape[-1]))
        self.params[t] = params
        return action.numpy()

    @torch.inference_mode()
    def observe(self, action: np.ndarray, step: StepResult) -> None:
        t = self.t
        self.rewards[t] = torch.from_numpy(step.reward)
        self.terminated[t] = torch.from_numpy(step.terminated)
        self.truncated[t] = torch.from_numpy(step.truncated)
        trunc = step.truncated & ~step.terminated
        if trunc.any():
            idx = np.flatnonzero(trunc)
            self.final_values[t] = 0.0
            self.final_values[t, idx] = self.net.value(torch.from_numpy(step.final_obs[idx]))
        else:
            self.final_values[t] = 0.0
        self.last_obs = step.next_obs
        self.t += 1

    @torch.no_grad()  # not inference mode: the learner's autograd uses these tensors
    def drain(self) -> Rollout:
        """The rollout recorded since the last drain (exactly ``T`` steps)."""
        if self.t != self.T:
            raise RuntimeError(f"rollout has {self.t} of {self.T} steps; run the actor for rollout_length steps")
        bootstrap = self.net.value(torch.from_numpy(self.last_obs))
        self.t = 0
        return Rollout(self.obs.clone(), self.actions.clone(), self.log_probs.clone(), self.values.clone(),
                       self.rewards.clone(), self.terminated.clone(), self.truncated.clone(),
                       self.final_values.clone(), bootstrap.clone(), {"policy_params": self.params.clone()},
                       policy_version=self.version)

    def state(self) -> dict:
        return {"generator": self.gen.get_state(), "version": self.version}

    def load_state(self, state: dict) -> None:
        self.gen.set_state(state["generator"])
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
