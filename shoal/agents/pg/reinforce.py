"""REINFORCE (Williams 1992): episodic Monte-Carlo policy gradient, with or without a learned baseline.

The actor hands over completed episodes; the learner waits until it holds
``episodes_per_update`` of them, computes each step's discounted return ``G_t``, and
takes one gradient step on ``-mean(log pi(a_t|s_t) * w_t)`` with ``w_t = G_t`` (or
``G_t - V(s_t)`` with a baseline, whose value net regresses on ``G_t``), the weights
standardised over the batch when ``normalize_returns`` is on.

With one env copy (the default) every episode runs on one set of parameters: the learner
updates only once an episode has ended. With several copies, episodes still in progress
at an update finish under the new parameters (reported as ``policy_lag``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shoal.agents.pg.actor import GreedyPolicy, SamplingPolicy
from shoal.agents.pg.episodic import Episode, EpisodeActor
from shoal.agents.pg.loss import policy_gradient_loss, value_loss
from shoal.agents.pg.networks import ActorCritic
from shoal.agents.pg.vanilla import (
    VanillaPGConfig,
    gradient_step,
    learner_state,
    load_learner_state,
    make_two_rate_optimizer,
    make_vanilla_networks,
    set_learning_rates,
)
from shoal.config import positive
from shoal.core.interfaces import Builder, Learner, Policy, Table
from shoal.core.nonfinite import NonFiniteGuard, parameter_groups
from shoal.returns import discounted_returns, fold_truncation


@dataclass
class ReinforceConfig(VanillaPGConfig):
    """REINFORCE: Monte-Carlo returns weight the log-probabilities of whole episodes."""

    episodes_per_update: int = 1
    """Completed episodes per gradient step (the learner waits until it holds this many)."""
    baseline: bool = True
    """Learn a state-value baseline V(s) and weight log-probabilities by G - V(s)."""
    normalize_returns: bool = True
    """Standardise the weights (G, or G - V with a baseline) over each update's steps."""
    bootstrap_truncated: bool = True
    """With a baseline, end the return of a time-limit-truncated episode with gamma * V(final observation)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "episodes_per_update")


def episode_returns(episodes: list[Episode], gamma: float, final_values: list[float] | None = None) -> torch.Tensor:
    """Discounted returns ``G_t`` of every step of ``episodes``, concatenated ``[sum T]``.

    A terminated episode's return ends at 0; a truncated one ends at ``final_values[i]``
    (``gamma * V(final_obs)`` is added to its last reward) or at 0 when none is given.
    """
    rewards = torch.cat([e.rewards for e in episodes]).unsqueeze(1)
    n = rewards.shape[0]
    ends = torch.cumsum(torch.tensor([len(e) for e in episodes]), 0) - 1
    terminated, truncated, finals = torch.zeros(n, 1), torch.zeros(n, 1), torch.zeros(n, 1)
    terminated[ends, 0] = torch.tensor([float(e.terminated) for e in episodes])
    # An episode ends either way: one without a flag (should not happen) is cut like a termination.
    truncated[ends, 0] = torch.tensor([float(not e.terminated) for e in episodes])
    if final_values is not None:
        finals[ends, 0] = torch.tensor(final_values, dtype=torch.float32)
    folded, discounts = fold_truncation(rewards, terminated, truncated, finals, gamma)
    return discounted_returns(folded, discounts, torch.zeros(1)).squeeze(1)


def reinforce_weights(returns: torch.Tensor, values: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
    """The per-step weights of the log-probabilities: ``G`` or ``G - V``, standardised if asked (no gradient)."""
    w = returns if values is None else returns - values
    w = w.detach()
    if normalize and w.numel() > 1:
        w = (w - w.mean()) / (w.std() + 1e-8)
    return w


def reinforce_loss(logp: torch.Tensor, returns: torch.Tensor, values: torch.Tensor | None = None,
                   normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``-mean(log pi(a|s) * w)`` with ``w`` from :func:`reinforce_weights`; returns ``(loss, w)``."""
    w = reinforce_weights(returns, values, normalize)
    return policy_gradient_loss(logp, w), w


class ReinforceLearner(Learner):
    """Buffers completed episodes and takes one gradient step per ``episodes_per_update`` of them."""

    def __init__(self, net: ActorCritic, cfg: ReinforceConfig, total_steps: int = 0, device: str = "cpu") -> None:
        self.net = net.to(device)
        self.cfg = cfg
        self.device = torch.device(device)
        self.opt = make_two_rate_optimizer(self.net, cfg)
        self.params = list(self.net.parameters())
        self.version = 0
        self.env_steps = 0
        self.total_steps = max(1, total_steps)
        self.episodes: list[Episode] = []
        self.variables = self.net.state_dict(keep_vars=True)
        self.guard = NonFiniteGuard()
        self._groups = parameter_groups(self.net)

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        # Copies, also on the CPU (where .cpu() would alias the live weights): the caller may hold
        # them, labelled with this version, while later steps update the weights in place.
        return self.version, {k: v.detach().to("cpu", copy=True) for k, v in self.variables.items()}

    def step(self, data: Any = None) -> dict[str, float]:
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, Episode):
                self.episodes.append(item)
            elif item:
                self.episodes.extend(item)
        cfg = self.cfg
        if len(self.episodes) < cfg.episodes_per_update:
            return {}  # nothing learned: the version stays, actors keep their parameters
        episodes, self.episodes = self.episodes, []
        dev = self.device
        obs = torch.cat([e.obs for e in episodes]).to(dev)
        actions = torch.cat([e.actions for e in episodes]).to(dev)
        finals = None
        if cfg.baseline and cfg.bootstrap_truncated and any(e.truncated for e in episodes):
            with torch.no_grad():
                v_final = self.net.value(torch.stack([e.final_obs for e in episodes]).to(dev)).cpu()
            finals = [float(v) if e.truncated else 0.0 for e, v in zip(episodes, v_final)]
        returns = episode_returns(episodes, cfg.gamma, finals).to(dev)

        params, values = self.net(obs)
        logp = self.net.dist.log_prob(params, actions)
        loss_pi, w = reinforce_loss(logp, returns, values if cfg.baseline else None, cfg.normalize_returns)
        entropy = self.net.dist.entropy(params).mean()
        loss = loss_pi - cfg.ent_coef * entropy
        loss_v = value_loss(values, returns) if cfg.baseline else torch.zeros((), device=dev)
        if cfg.baseline:
            loss = loss + loss_v  # separate torsos and learning rates: no weight needed
        lr = set_learning_rates(self.opt, cfg, self.env_steps / self.total_steps)
        grad_norm = gradient_step(self.params, self.opt, loss, cfg.max_grad_norm, self.guard, self._groups,
                                  {"returns": returns, "obs": obs})
        self.env_steps += sum(len(e) for e in episodes)
        if self.guard.last_skipped:  # a NaN or inf: parameters, optimiser and statistics stay as they were
            return {"lr": lr, **self.guard.metrics()}
        self.net.obs_norm.update(obs)
        self.version += 1
        return {"loss_pi": float(loss_pi.detach()), "loss_v": float(loss_v.detach()), "entropy": float(entropy.detach()),
                "grad_norm": grad_norm, "lr": lr, "return_mean": float(returns.mean()),
                "weight_std": float(w.std()) if w.numel() > 1 else 0.0,
                "episodes_per_update": float(len(episodes)),
                "policy_lag": float(self.version - 1 - min(e.policy_version for e in episodes)),  # updates since the oldest began
                **self.guard.metrics()}

    def state(self) -> dict[str, Any]:
        # Buffered episodes are not saved: a resumed run restarts its episodes anyway.
        return learner_state(self.net, self.opt, version=self.version, env_steps=self.env_steps)

    def load_state(self, state: dict[str, Any]) -> None:
        load_learner_state(self.net, self.opt, state)
        self.version = int(state["version"])
        self.env_steps = int(state.get("env_steps", 0))
        self.episodes = []


class ReinforceBuilder(Builder):
    """REINFORCE on the ``local`` topology: one learner step per hand-over, a no-op until enough episodes."""

    config: ReinforceConfig

    def make_networks(self) -> ActorCritic:
        return make_vanilla_networks(self.config, self.env_spec)

    def make_policy(self, networks: nn.Module, evaluation: bool) -> Policy:
        assert isinstance(networks, ActorCritic)
        return GreedyPolicy(networks) if evaluation else SamplingPolicy(networks, self.seed)

    def make_actor(self, networks: nn.Module, num_envs: int, actor_id: int = 0, num_actors: int = 1, seed: int = 0) -> EpisodeActor:
        assert isinstance(networks, ActorCritic)
        return EpisodeActor(networks, self.env_spec, num_envs, seed)

    def make_learner(self, networks: nn.Module, tables: dict[str, Table]) -> ReinforceLearner:
        assert isinstance(networks, ActorCritic)
        return ReinforceLearner(networks, self.config, self.total_steps, self.device)
