"""Heads and their distributions, as plain tensor functions (no torch.distributions on the hot path).

A policy head returns a *parameter tensor*: logits ``[..., A]`` for a categorical
policy, ``[..., 2 * act_dim]`` (mean then log-std) for a diagonal Gaussian. The
matching distribution class has static functions over that tensor, so sampling
can use an explicit ``torch.Generator`` (per-actor reproducibility).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_LOG_2PI = math.log(2 * math.pi)


def layer_init(layer: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights with ``gain`` and zero bias."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class PolicyDistribution(Protocol):
    """What a policy head's ``dist`` offers (:class:`Categorical`, :class:`DiagGaussian`): functions of its parameters."""

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions drawn for each row of ``params``."""

    def log_prob(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of ``actions`` under ``params``."""


class Categorical:
    """Categorical distribution over logits ``[..., A]``."""

    @staticmethod
    def sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # Gumbel-max: one uniform draw per logit, no normalisation needed.
        u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
        return (logits - torch.log(-torch.log(u.clamp_(1e-20, 1.0)))).argmax(-1)

    @staticmethod
    def log_prob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(logits, -1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def entropy(logits: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, -1)
        return -(logp.exp() * logp).sum(-1)

    @staticmethod
    def mode(logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

    @staticmethod
    def kl(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """KL(old || new) per sample."""
        lo, ln = F.log_softmax(old, -1), F.log_softmax(new, -1)
        return (lo.exp() * (lo - ln)).sum(-1)


class DiagGaussian:
    """Diagonal Gaussian over parameters ``[..., 2 * act_dim]`` = (mean, log_std)."""

    @staticmethod
    def split(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = params.chunk(2, dim=-1)
        return mean, log_std

    @staticmethod
    def sample(params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean, log_std = DiagGaussian.split(params)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + log_std.exp() * eps

    @staticmethod
    def log_prob(params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        mean, log_std = DiagGaussian.split(params)
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)

    @staticmethod
    def entropy(params: torch.Tensor) -> torch.Tensor:
        _, log_std = DiagGaussian.split(params)
        return (log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1)

    @staticmethod
    def mode(params: torch.Tensor) -> torch.Tensor:
        return DiagGaussian.split(params)[0]

    @staticmethod
    def kl(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """KL(old || new) per sample."""
        m0, s0 = DiagGaussian.split(old)
        m1, s1 = DiagGaussian.split(new)
        return (s1 - s0 + (torch.exp(2 * s0) + (m0 - m1).pow(2)) / (2 * torch.exp(2 * s1)) - 0.5).sum(-1)


class CategoricalHead(nn.Module):
    """Logits over ``num_actions`` discrete actions."""

    dist = Categorical

    def __init__(self, in_dim: int, num_actions: int, gain: float = 0.01) -> None:
        super().__init__()
        self.logits = layer_init(nn.Linear(in_dim, num_actions), gain)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.logits(h)


class GaussianHead(nn.Module):
    """A diagonal Gaussian with a state-independent learned log standard deviation."""

    dist = DiagGaussian

    def __init__(self, in_dim: int, act_dim: int, log_std_init: float = 0.0, gain: float = 0.01) -> None:
        super().__init__()
        self.mean = layer_init(nn.Linear(in_dim, act_dim), gain)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mean = self.mean(h)
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).expand_as(mean)
        return torch.cat([mean, log_std], dim=-1)


class ValueHead(nn.Module):
    """A scalar state value."""

    def __init__(self, in_dim: int, gain: float = 1.0) -> None:
        super().__init__()
        self.v = layer_init(nn.Linear(in_dim, 1), gain)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.v(h).squeeze(-1)
