"""The actor-critic network: policy head and value head over MLP or CNN torsos."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from shoal.core.types import EnvSpec
from shoal.nets import CategoricalHead, GaussianHead, ValueHead, make_torso
from shoal.nets.normalize import ObsNormalizer
from shoal.nets.torsos import ParallelMLP


class ActorCritic(nn.Module):
    """``forward(obs) -> (policy_params, value)``; ``dist`` interprets policy_params.

    Separate policy and value MLPs run as one :class:`ParallelMLP` (two slices) unless
    ``fused=False``, which keeps them as two modules (``pi_torso``, ``v_torso``), e.g. to
    give them different learning rates; image observations share a Nature-CNN torso.
    """

    def __init__(self, spec: EnvSpec, hidden: tuple[int, ...], activation: str, shared: bool,
                 log_std_init: float, normalize_obs: bool, fused: bool = True) -> None:
        super().__init__()
        image = len(spec.obs_shape) == 3
        self.obs_norm = ObsNormalizer(spec.obs_shape, normalize_obs and not image)
        self.obs_ndim = len(spec.obs_shape)
        self.shared = shared or image or not hidden
        self.fused = fused and not self.shared
        if self.shared:
            self.torso = make_torso(spec.obs_shape, hidden, activation)
            self.pi_torso = self.v_torso = self.torso
        elif not self.fused:
            self.pi_torso = make_torso(spec.obs_shape, hidden, activation)
            self.v_torso = make_torso(spec.obs_shape, hidden, activation)
            self.torso = self.pi_torso
        else:
            in_dim = int(math.prod(spec.obs_shape)) if spec.obs_shape else 1
            self.torso = ParallelMLP(in_dim, hidden, k=2, act=activation)
        d = cast(int, self.torso.out_dim)  # every torso records its feature width as an int ``out_dim``
        self.pi = CategoricalHead(d, spec.num_actions) if spec.discrete else GaussianHead(d, spec.num_actions, log_std_init)
        self.v = ValueHead(d)
        self.dist = self.pi.dist

    def _features(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if obs.dtype == torch.uint8:
            h = self.torso(obs)
            return h, h
        x = self.obs_norm(obs.float())
        if self.shared:
            h = self.torso(x)
            return h, h
        if not self.fused:
            return self.pi_torso(x), self.v_torso(x)
        lead = x.shape[: x.dim() - self.obs_ndim]
        h = self.torso(x.reshape(*lead, -1) if self.obs_ndim != 1 else x)
        return h[0].reshape(*lead, -1), h[1].reshape(*lead, -1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_pi, h_v = self._features(obs)
        return self.pi(h_pi), self.v(h_v)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.v(self._features(obs)[1])
