"""The tanh-squashed diagonal Gaussian of SAC, as plain tensor functions.

``u ~ N(mean, std)`` and ``a = tanh(u)``; by the change of variables
``log p(a) = log N(u; mean, std) - sum_i log(1 - tanh(u_i)**2)``. The correction is
computed as ``2 * (log 2 - u - softplus(-2u))``, which equals ``log(1 - tanh(u)**2)``
but stays finite where ``tanh(u)`` rounds to +-1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LOG_2PI = math.log(2 * math.pi)
_LOG_2 = math.log(2.0)


def tanh_log_det_jacobian(u: torch.Tensor) -> torch.Tensor:
    """``sum_i log |d tanh(u_i) / d u_i|`` over the last axis, stable for large ``|u|``."""
    return (2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))).sum(-1)


def gaussian_log_prob_from_noise(noise: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log N(mean + std * noise; mean, std)`` summed over the last axis (needs only the standard noise)."""
    return (-0.5 * noise.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)


def tanh_gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor,
                         noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A reparameterised sample ``tanh(mean + std * noise)`` and its log-probability.

    ``noise`` is standard normal with the shape of ``mean``; gradients flow to ``mean``
    and ``log_std``.
    """
    u = mean + log_std.exp() * noise
    return torch.tanh(u), gaussian_log_prob_from_noise(noise, log_std) - tanh_log_det_jacobian(u)


def tanh_gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Log-density of ``a = tanh(u)`` under the squashed Gaussian, given the pre-squash ``u``."""
    noise = (u - mean) * torch.exp(-log_std)
    return gaussian_log_prob_from_noise(noise, log_std) - tanh_log_det_jacobian(u)
