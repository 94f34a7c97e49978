"""Bootstrap values, TD errors and D4PG's target distributions from a :class:`ContinuousNetworks`,
shared by learner and actors.

Actors that compute initial priorities (Ape-X) use exactly the learner's target, so an
item's first priority and its later, learner-computed ones are the same quantity: the
absolute TD error for scalar critics, the cross-entropy to the projected target
distribution for a distributional (D4PG) critic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoal.agents.continuous.distributions import tanh_gaussian_sample
from shoal.agents.continuous.loss import (
    categorical_critic_loss,
    min_over_critics,
    smooth_target_action,
    soft_value,
    td_target,
)
from shoal.agents.continuous.networks import ContinuousNetworks
from shoal.core.device import randn
from shoal.returns.categorical import categorical_projection


def _target_action(net: ContinuousNetworks, next_obs: torch.Tensor, target_noise: float, noise_clip: float,
                   gen: torch.Generator | None) -> torch.Tensor:
    """``mu'(s')``, smoothed by clipped noise when ``target_noise > 0`` (TD3)."""
    assert net.policy_target is not None, "a deterministic agent's network (DDPG/TD3/D4PG) is needed, not SAC's"
    next_action = net.policy_target(next_obs)
    if target_noise > 0:
        noise = randn(next_action.shape, gen, next_action.device) * target_noise
        next_action = smooth_target_action(next_action, noise, noise_clip)
    return next_action


def dpg_next_value(net: ContinuousNetworks, next_obs: torch.Tensor, target_noise: float, noise_clip: float,
                   gen: torch.Generator | None) -> torch.Tensor:
    """``min_i Q'_i(s', a')`` with ``a' = mu'(s')``, smoothed by clipped noise when ``target_noise > 0`` (TD3)."""
    return min_over_critics(net.critic_target(next_obs, _target_action(net, next_obs, target_noise, noise_clip, gen)))


def d4pg_target_probs(net: ContinuousNetworks, next_obs: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor,
                      target_noise: float, noise_clip: float, gen: torch.Generator | None) -> torch.Tensor:
    """D4PG's target ``[B, N]``: the target critic's distribution at ``(s', mu'(s'))`` moved to
    ``reward + discount * z`` and projected back onto the support."""
    assert net.support is not None, "d4pg_target_probs needs a distributional critic (a network with a support)"
    logits = net.critic_target(next_obs, _target_action(net, next_obs, target_noise, noise_clip, gen))[0]
    probs = torch.softmax(logits, dim=-1)
    # A NaN or inf reward has no place on the support: its item's target is NaN (the projection's indices
    # cannot hold one), so the loss shows it and the learner's guard skips the update.
    bad = ~torch.isfinite(reward)
    reward = torch.where(bad, torch.zeros_like(reward), reward).to(probs.dtype)
    target = categorical_projection(probs, reward, discount.to(probs.dtype), net.support)
    return torch.where(bad.reshape(-1, *([1] * (target.dim() - 1))), torch.full_like(target, float("nan")), target)


def sac_next_value(net: ContinuousNetworks, next_obs: torch.Tensor, alpha: torch.Tensor,
                   gen: torch.Generator | None) -> torch.Tensor:
    """``min_i Q'_i(s', a') - alpha * log pi(a'|s')`` with ``a' ~ pi(.|s')``."""
    mean, log_std = net.policy(next_obs)
    noise = randn(mean.shape, gen, mean.device)
    next_action, next_log_prob = tanh_gaussian_sample(mean, log_std, noise)
    return soft_value(min_over_critics(net.critic_target(next_obs, next_action)), next_log_prob, alpha)


def next_value(net: ContinuousNetworks, cfg: Any, next_obs: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """The bootstrap value of the agent ``net`` belongs to (normalised ``next_obs``)."""
    if net.stochastic:
        assert net.log_alpha is not None
        return sac_next_value(net, next_obs, net.log_alpha.detach().exp(), gen)
    return dpg_next_value(net, next_obs, cfg.target_noise, cfg.target_noise_clip, gen)


@torch.no_grad()
def td_priorities(net: ContinuousNetworks, cfg: Any, items: dict[str, np.ndarray], gen: torch.Generator | None,
                  eps: float) -> np.ndarray:
    """Each item's priority for prioritized replay, plus ``eps``: ``|y - Q(s, a)|`` (mean over critics),
    or for a distributional critic the KL divergence from the projected target to its distribution."""
    obs = net.normalize(torch.from_numpy(items["obs"]))
    next_obs = net.normalize(torch.from_numpy(items["next_obs"]))
    reward, discount = torch.from_numpy(items["reward"]), torch.from_numpy(items["discount"])
    q = net.critic(obs, torch.from_numpy(items["action"]))
    if net.support is not None:
        target = d4pg_target_probs(net, next_obs, reward, discount, cfg.target_noise, cfg.target_noise_clip, gen)
        error = categorical_critic_loss(q[0], target)[1]
    else:
        error = (q - td_target(reward, discount, next_value(net, cfg, next_obs, gen))).abs().mean(0)
    return (error + eps).double().numpy()
