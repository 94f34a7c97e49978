"""The episodic actor: samples actions and hands over whole, completed episodes (REINFORCE)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shoal.agents.pg.networks import ActorCritic
from shoal.agents.pg.vanilla import VariableCopier
from shoal.core.interfaces import Actor
from shoal.core.types import EnvSpec, StepResult


@dataclass
class Episode:
    """One finished episode, time-major ``[T, ...]``.

    ``final_obs`` is the observation after the last step (the bootstrap state when the
    episode was truncated by a time limit); ``policy_version`` is the learner version
    the actor held when the episode began (with one env copy, the one it ran on throughout).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: bool
    truncated: bool
    final_obs: torch.Tensor
    policy_version: int = 0

    def __len__(self) -> int:
        return int(self.rewards.shape[0])


class EpisodeActor(Actor):
    """Samples from the policy for ``num_envs`` copies and keeps each copy's episode so far.

    :meth:`drain` returns the episodes completed since the last drain (partial episodes
    stay with the actor). Parameters are adopted only when their version changes.
    """

    def __init__(self, networks: ActorCritic, spec: EnvSpec, num_envs: int, seed: int) -> None:
        self.net = networks
        self.spec = spec
        self.B = num_envs
        self.gen = torch.Generator().manual_seed(seed)
        self.version = -1
        self.copy_in = VariableCopier(networks)
        self._reset_partial()
        self.done: list[Episode] = []

    def _reset_partial(self) -> None:
        self.start_version = [self.version] * self.B
        self.obs: list[list[np.ndarray]] = [[] for _ in range(self.B)]
        self.actions: list[list[np.ndarray]] = [[] for _ in range(self.B)]
        self.rewards: list[list[float]] = [[] for _ in range(self.B)]

    def load_variables(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Adopt the learner's parameters (skipped when the version is unchanged)."""
        if version != self.version:
            self.copy_in(state_dict)
            self.version = version

    def observe_first(self, obs: np.ndarray) -> None:
        self._reset_partial()

    @torch.inference_mode()
    def select_action(self, obs: np.ndarray) -> np.ndarray:
        params, _ = self.net(torch.as_tensor(obs))
        action = self.net.dist.sample(params, self.gen).numpy()
        for b in range(self.B):
            if not self.obs[b]:
                self.start_version[b] = self.version
            self.obs[b].append(obs[b].copy())
            self.actions[b].append(action[b])
        return action

    def observe(self, action: np.ndarray, step: StepResult) -> None:
        done = step.terminated | step.truncated
        for b in range(self.B):
            self.rewards[b].append(float(step.reward[b]))
            if done[b]:
                self.done.append(Episode(
                    torch.as_tensor(np.stack(self.obs[b])), torch.as_tensor(np.stack(self.actions[b])),
                    torch.tensor(self.rewards[b], dtype=torch.float32), bool(step.terminated[b]),
                    bool(step.truncated[b] and not step.terminated[b]), torch.as_tensor(step.final_obs[b]).clone(),
                    self.start_version[b]))
                self.obs[b], self.actions[b], self.rewards[b] = [], [], []

    def drain(self) -> list[Episode]:
        """Episodes completed since the last drain (possibly none)."""
        out, self.done = self.done, []
        return out

    def state(self) -> dict:
        return {"generator": self.gen.get_state()}

    def load_state(self, state: dict) -> None:
        self.gen.set_state(state["generator"])
