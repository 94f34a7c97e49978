"""Categorical (C51) return distributions: fixed atoms and the projection of n-step targets onto them.

A categorical distribution puts probability ``p_j`` on each of ``N`` evenly spaced atoms
``z_j = v_min + j * dz`` of ``[v_min, v_max]`` (Bellemare et al. 2017). The distributional
Bellman target of an n-step transition moves every atom to ``R + discount * z_j``, where
``R = r_0 + gamma r_1 + ... + gamma**(m-1) r_{m-1}`` and ``discount`` are what the n-step
adder stores (``gamma**m``, or 0 when the episode terminated inside the window, which
collapses every atom onto ``R``; truncation keeps ``gamma**m`` and bootstraps). Those
shifted atoms no longer sit on the support, so :func:`categorical_projection` splits each
one's mass between its two neighbouring atoms in proportion to closeness, after clipping
it to ``[v_min, v_max]``. The split preserves the mean of every target inside the range.
"""

from __future__ import annotations

import torch


def categorical_support(v_min: float, v_max: float, num_atoms: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``num_atoms`` evenly spaced atoms ``[N]`` from ``v_min`` to ``v_max`` (both included)."""
    if not v_max > v_min:
        raise ValueError(f"the support needs v_max > v_min, got v_min={v_min}, v_max={v_max}")
    if num_atoms < 2:
        raise ValueError(f"a categorical support needs at least 2 atoms, got {num_atoms}")
    return torch.linspace(v_min, v_max, num_atoms, dtype=dtype)


def categorical_projection(probs: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor,
                           support: torch.Tensor) -> torch.Tensor:
    """Project ``R + discount * z`` (with probabilities ``probs``) onto ``support``; returns ``[B, N]``.

    ``probs`` is ``[B, N]`` (the bootstrap distribution at the next state, rows summing to 1),
    ``reward`` and ``discount`` are ``[B]``, ``support`` is the evenly spaced ``[N]``.
    Each target atom ``Tz_j = clip(R + discount * z_j, v_min, v_max)`` sits at fractional index
    ``b_j = (Tz_j - v_min) / dz``; atom ``floor(b_j)`` gets ``1 - frac(b_j)`` of its mass and the
    next atom ``frac(b_j)`` (all of it stays put when ``b_j`` is a whole number).
    """
    if probs.dim() != 2 or probs.shape[-1] != support.shape[0]:
        raise ValueError(f"probs must be [B, {support.shape[0]}], got {tuple(probs.shape)}")
    if reward.shape != probs.shape[:1] or discount.shape != probs.shape[:1]:
        raise ValueError(f"reward {tuple(reward.shape)} and discount {tuple(discount.shape)} must be "
                         f"[{probs.shape[0]}]")
    n = support.shape[0]
    v_min, v_max = support[0], support[-1]
    dz = (v_max - v_min) / (n - 1)
    target_atoms = (reward.unsqueeze(-1) + discount.unsqueeze(-1) * support).clamp(v_min, v_max)  # [B, N]
    pos = ((target_atoms - v_min) / dz).clamp(0, n - 1)  # rounding may step just outside [0, N-1]
    lower = pos.floor()
    upper_share = pos - lower
    lower_idx = lower.long()
    upper_idx = (lower_idx + 1).clamp_max(n - 1)  # at v_max the upper share is 0
    out = torch.zeros_like(probs)
    out.scatter_add_(-1, lower_idx, probs * (1.0 - upper_share))
    out.scatter_add_(-1, upper_idx, probs * upper_share)
    return out


def categorical_mean(probs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """The expected value ``sum_j p_j z_j`` of categorical distributions ``[..., N]`` -> ``[...]``."""
    return (probs * support).sum(-1)
