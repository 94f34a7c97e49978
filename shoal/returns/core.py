"""Discounted returns, n-step targets, GAE and TD(lambda) on time-major tensors."""

from __future__ import annotations

import torch


def _check(rewards: torch.Tensor, discounts: torch.Tensor, bootstrap_value: torch.Tensor) -> None:
    if rewards.shape != discounts.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and discounts {tuple(discounts.shape)} must match")
    if bootstrap_value.shape != rewards.shape[1:]:
        raise ValueError(f"bootstrap_value {tuple(bootstrap_value.shape)} must be {tuple(rewards.shape[1:])}")


def _reverse_scan(x: torch.Tensor, decay: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    """``y_t = x_t + decay_t * y_{t+1}`` with ``y_T = init``, scanning time backwards."""
    out = torch.empty_like(x)
    acc = init
    for t in range(x.shape[0] - 1, -1, -1):
        acc = x[t] + decay[t] * acc
        out[t] = acc
    return out


def discounted_returns(rewards: torch.Tensor, discounts: torch.Tensor, bootstrap_value: torch.Tensor) -> torch.Tensor:
    """``G_t = r_t + discounts_t * G_{t+1}`` with ``G_T = bootstrap_value``."""
    _check(rewards, discounts, bootstrap_value)
    return _reverse_scan(rewards, discounts, bootstrap_value)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    discounts: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """Generalised advantage estimates (Schulman et al. 2016), ``[T, B]``.

    ``delta_t = r_t + discounts_t * V(s_{t+1}) - V(s_t)`` and
    ``A_t = delta_t + discounts_t * lam * A_{t+1}``.
    """
    _check(rewards, discounts, bootstrap_value)
    if values.shape != rewards.shape:
        raise ValueError(f"values {tuple(values.shape)} must match rewards {tuple(rewards.shape)}")
    next_values = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
    deltas = rewards + discounts * next_values - values
    return _reverse_scan(deltas, discounts * lam, torch.zeros_like(bootstrap_value))


def td_lambda(
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    discounts: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """TD(lambda) returns: ``GAE + V`` (the lambda-return targets for a value function)."""
    return gae(rewards, values, bootstrap_value, discounts, lam) + values


def n_step_targets(
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    discounts: torch.Tensor,
    n: int,
) -> torch.Tensor:
    """n-step bootstrapped targets ``sum_{k<n} (prod discounts) r_{t+k} + (prod discounts) V(s_{t+n})``.

    Windows that reach past the end of the sequence bootstrap from ``bootstrap_value``;
    a zero discount (termination) inside a window stops it there.
    """
    _check(rewards, discounts, bootstrap_value)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    T = rewards.shape[0]
    # V(s_{t}) for t = 0..T, with s_T's value being the bootstrap.
    all_values = torch.cat([values, bootstrap_value.unsqueeze(0)], dim=0)
    targets = torch.zeros_like(rewards)
    scale = torch.ones_like(rewards)
    for k in range(n):
        idx = torch.clamp(torch.arange(T, device=rewards.device) + k, max=T - 1)
        valid = (torch.arange(T, device=rewards.device) + k < T).to(rewards.dtype).view(T, *([1] * (rewards.dim() - 1)))
        targets = targets + valid * scale * rewards[idx]
        scale = torch.where(valid.bool(), scale * discounts[idx], scale)
    end = torch.clamp(torch.arange(T, device=rewards.device) + n, max=T)
    return targets + scale * all_values[end]


def fold_truncation(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards and discounts for sequences that may contain time-limit truncations.

    On truncation the return bootstraps from ``V(final_obs)``: ``r_t + gamma * V(final)``
    replaces ``r_t`` and the discount becomes 0 so nothing of the next episode leaks in.
    On termination the discount is 0 and nothing is added. Returns ``(rewards, discounts)``.
    """
    trunc = truncated.to(rewards.dtype) * (1.0 - terminated.to(rewards.dtype))
    new_rewards = rewards + gamma * trunc * final_values
    ended = torch.clamp(terminated.to(rewards.dtype) + truncated.to(rewards.dtype), max=1.0)
    return new_rewards, gamma * (1.0 - ended)
