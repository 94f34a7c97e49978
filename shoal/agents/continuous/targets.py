"""Bootstrap values and TD errors from a :class:`ContinuousNetworks`, shared by learner and actors.

Actors that compute initial priorities (Ape-X) use exactly the learner's target, so an
item's first priority and its later, learner-computed ones are the same quantity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoal.agents.continuous.distributions import tanh_gaussian_sample
from shoal.agents.continuous.loss import min_over_critics, smooth_target_action, soft_value, td_target
from shoal.agents.continuous.networks import ContinuousNetworks
from shoal.core.device import randn


def dpg_next_value(net: ContinuousNetworks, next_obs: torch.Tensor, target_noise: float, noise_clip: float,
                   gen: torch.Generator | None) -> torch.Tensor:
    """``min_i Q'_i(s', a')`` with ``a' = mu'(s')``, smoothed by clipped noise when ``target_noise > 0`` (TD3)."""
    assert net.policy_target is not None, "dpg_next_value needs a deterministic agent's network (DDPG/TD3), not SAC's"
    next_action = net.policy_target(next_obs)
    if target_noise > 0:
        noise = randn(next_action.shape, gen, next_action.device) * target_noise
        next_action = smooth_target_action(next_action, noise, noise_clip)
    return min_over_critics(net.critic_target(next_obs, next_action))


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
    """``|y - Q(s, a)| + eps`` per item (mean over critics), for prioritized replay."""
    obs = net.normalize(torch.from_numpy(items["obs"]))
    next_obs = net.normalize(torch.from_numpy(items["next_obs"]))
    y = td_target(torch.from_numpy(items["reward"]), torch.from_numpy(items["discount"]),
                  next_value(net, cfg, next_obs, gen))
    q = net.critic(obs, torch.from_numpy(items["action"]))
    return ((q - y).abs().mean(0) + eps).double().numpy()
