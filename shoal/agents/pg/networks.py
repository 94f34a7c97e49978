"""The actor-critic network: policy head and value head over MLP or CNN torsos."""

from __future__ import annotations

import torch
from torch import nn

from shoal.core.types import EnvSpec
from shoal.envs.normalize import ObsNormalizer
from shoal.nets import CategoricalHead, GaussianHead, ValueHead, make_torso


class ActorCritic(nn.Module):
    """``forward(obs) -> (policy_params, value)``; ``dist`` interprets policy_params."""

    def __init__(self, spec: EnvSpec, hidden: tuple[int, ...], activation: str, shared: bool,
                 log_std_init: float, normalize_obs: bool) -> None:
        super().__init__()
        image = len(spec.obs_shape) == 3
        self.obs_norm = ObsNormalizer(spec.obs_shape, normalize_obs and not image)
        self.pi_torso = make_torso(spec.obs_shape, hidden, activation)
        self.shared = shared or image
        self.v_torso = self.pi_torso if self.shared else make_torso(spec.obs_shape, hidden, activation)
        d = self.pi_torso.out_dim
        self.pi = CategoricalHead(d, spec.num_actions) if spec.discrete else GaussianHead(d, spec.num_actions, log_std_init)
        self.v = ValueHead(d)
        self.dist = self.pi.dist

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.obs_norm(obs.float()) if obs.dtype != torch.uint8 else obs
        h = self.pi_torso(x)
        hv = h if self.shared else self.v_torso(x)
        return self.pi(h), self.v(hv)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.obs_norm(obs.float()) if obs.dtype != torch.uint8 else obs
        return self.v(self.v_torso(x))
