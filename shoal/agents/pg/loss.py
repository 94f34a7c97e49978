"""Policy-gradient losses as pure functions over flat batches."""

from __future__ import annotations

import torch


def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate ``-E[min(r A, clip(r, 1-eps, 1+eps) A)]``; returns ``(loss, clip_fraction)``."""
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)
    clip_frac = ((ratio - 1.0).abs() > clip).float().mean()
    return -surrogate.mean(), clip_frac


def ppo_kl_penalty_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, kl: torch.Tensor, beta: float) -> torch.Tensor:
    """PPO adaptive-KL objective ``-E[r A - beta KL(pi_old || pi)]``."""
    ratio = torch.exp(logp - old_logp)
    return -(ratio * adv - beta * kl).mean()


def adapt_kl_beta(beta: float, kl: float, target: float) -> float:
    """The PPO paper's rule: halve beta when KL < target/1.5, double it when KL > 1.5 target."""
    if kl < target / 1.5:
        return beta / 2.0
    if kl > target * 1.5:
        return beta * 2.0
    return beta


def policy_gradient_loss(logp: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Vanilla policy-gradient loss ``-E[log pi(a|s) A]`` (A2C, REINFORCE)."""
    return -(logp * adv).mean()


def value_loss(values: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor | None = None,
               clip: float | None = None) -> torch.Tensor:
    """``0.5 E[(V - G)^2]``, optionally PPO2-style clipped around ``old_values``."""
    loss = (values - returns).pow(2)
    if clip is not None and old_values is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.maximum(loss, (clipped - returns).pow(2))
    return 0.5 * loss.mean()


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - pred] / Var[target] (1 is perfect, <= 0 is no better than a constant)."""
    var = target.var()
    return float("nan") if var == 0 else float(1.0 - (target - pred).var() / var)
