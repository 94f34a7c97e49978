"""Q-networks: an MLP or Nature-CNN torso with a plain or dueling head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from shoal.agents.dqn.loss import dueling_aggregate
from shoal.core.types import EnvSpec
from shoal.errors import EnvError
from shoal.nets import MLP, NatureCNN
from shoal.nets.torsos import mlp_layers

_FUNCTIONAL = {"relu": torch.relu, "tanh": torch.tanh, "elu": F.elu, "silu": F.silu}


def _head(in_dim: int, out_dim: int, hidden: int, act: str) -> nn.Module:
    if hidden == 0:
        return nn.Linear(in_dim, out_dim)
    return mlp_layers(in_dim, (hidden,), act, out_dim=out_dim, init_gain=None)


class QNetwork(nn.Module):
    """``forward(obs) -> Q [B, num_actions]``; with ``dueling`` the head is ``V + A - mean(A)``.

    Image observations ``[C, H, W]`` get the Nature-CNN torso, anything else an MLP over
    the flattened observation. The MLP path calls its layers functionally: for nets this
    small, per-module dispatch costs as much as the arithmetic.
    """

    def __init__(self, spec: EnvSpec, hidden: tuple[int, ...] = (64, 64), activation: str = "relu",
                 dueling: bool = False, head_hidden: int = 0) -> None:
        super().__init__()
        if not spec.discrete:
            raise EnvError(f"DQN needs a Discrete action space, but {spec.env_id!r} has {spec.num_actions}-dimensional "
                           "continuous actions; use a continuous-control algorithm or discretise the actions")
        self.obs_ndim = len(spec.obs_shape)
        self.image = self.obs_ndim == 3
        if self.image:
            self.torso: nn.Module = NatureCNN(spec.obs_shape[0])
        else:
            self.torso = MLP(int(math.prod(spec.obs_shape)) if spec.obs_shape else 1, hidden, activation)
        d = self.torso.out_dim
        self.dueling = dueling
        self.num_actions = spec.num_actions
        if dueling:
            self.value = _head(d, 1, head_hidden, activation)
            self.advantage = _head(d, spec.num_actions, head_hidden, activation)
        else:
            self.q = _head(d, spec.num_actions, head_hidden, activation)
        self._act = _FUNCTIONAL[activation]
        self._linears = [] if self.image else [m for m in self.torso.net if isinstance(m, nn.Linear)]

    def _layer(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, module.weight, module.bias) if isinstance(module, nn.Linear) else module(x)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.image:
            h = self.torso(obs)
        else:
            h = obs.float()
            if self.obs_ndim == 0:
                h = h.unsqueeze(-1)
            elif self.obs_ndim > 1:
                h = h.flatten(start_dim=-self.obs_ndim)
            for lin in self._linears:
                h = self._act(F.linear(h, lin.weight, lin.bias))
        if self.dueling:
            return dueling_aggregate(self._layer(self.value, h), self._layer(self.advantage, h))
        return self._layer(self.q, h)
