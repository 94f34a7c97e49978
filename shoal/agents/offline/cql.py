"""Conservative Q-learning (Kumar et al. 2020), CQL(H), on shoal's DQN and SAC learners.

Both learners are the online ones unchanged (targets, TD losses, optimisers, target
updates) reading a replay table that holds the dataset, plus one term on the critic:

- discrete (:class:`CQLDQNLearner`): ``alpha * mean_b [logsumexp_a Q(s_b, a) - Q(s_b, a_b)]``
  added to the DQN loss;
- continuous (:class:`CQLSACLearner`): per critic, the importance-sampled logsumexp over
  ``N`` uniform actions and ``N`` policy actions at ``s`` and at ``s'`` minus ``Q(s, a_data)``,
  weighted by ``alpha / 2`` per critic (the authors' code adds ``alpha`` times it to each
  critic's full squared error, shoal's critic loss is half of that: the same update under
  Adam), or, with ``lagrange``, by a multiplier ``alpha' = exp(log alpha')`` learned by dual
  descent on ``alpha' * (alpha * gap - target_action_gap)``.

With ``alpha = 0`` (``offline_dqn``, ``offline_sac``) the term is skipped: naive offline RL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from shoal.agents.continuous.config import SACConfig
from shoal.agents.continuous.distributions import tanh_gaussian_sample
from shoal.agents.continuous.learner import SACLearner
from shoal.agents.continuous.networks import ContinuousNetworks
from shoal.agents.dqn.config import DQNConfig
from shoal.agents.dqn.learner import DQNLearner
from shoal.agents.dqn.networks import QNetwork
from shoal.agents.offline.loss import (
    bc_nll_loss,
    cql_continuous_regulariser,
    cql_discrete_regulariser,
    cql_importance_logsumexp,
    cql_plain_logsumexp,
)
from shoal.core.device import randn
from shoal.core.interfaces import Table
from shoal.nets.optim import Adam, FlatParams, load_optimizer_state, optimizer_state


class CQLDQNLearner(DQNLearner):
    """DQN's learner with the discrete CQL(H) regulariser of weight ``cql_alpha`` on its loss."""

    def __init__(self, net: QNetwork, cfg: DQNConfig, table: Table, total_steps: int, cql_alpha: float,
                 device: str = "cpu") -> None:
        super().__init__(net, cfg, table, total_steps, device)
        self.cql_alpha = float(cql_alpha)
        self._last_cql = 0.0

    def _loss(self, items: Mapping[str, np.ndarray | torch.Tensor], probs: np.ndarray | None,
              table_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss, td, q = super()._loss(items, probs, table_size)
        if self.cql_alpha == 0.0:
            return loss, td, q
        q_all = self.net(self._tensor(items["obs"]))
        reg = cql_discrete_regulariser(q_all, self._tensor(items["action"], torch.int64))
        self._last_cql = float(reg.detach())
        return loss + self.cql_alpha * reg, td, q

    def update(self, items: Mapping[str, np.ndarray | torch.Tensor], probs: np.ndarray | None = None,
               table_size: int = 0) -> tuple[dict[str, float], np.ndarray]:
        metrics, priorities = super().update(items, probs, table_size)
        if self.cql_alpha:
            metrics["cql_gap"] = self._last_cql
        return metrics, priorities


class CQLSACLearner(SACLearner):
    """SAC's learner with the continuous CQL(H) regulariser on its critics (plain autograd, no fused step)."""

    def __init__(self, net: ContinuousNetworks, cfg: SACConfig, table: Table, total_steps: int, seed: int,
                 cql_alpha: float, num_sampled_actions: int, lagrange: bool = False, target_action_gap: float = 10.0,
                 lagrange_lr: float = 3e-4, device: str = "cpu", importance_sample: bool = True,
                 bc_steps: int = 0) -> None:
        super().__init__(net, cfg, table, total_steps, seed, device)
        self.fused = None  # the hand-written SAC gradients know nothing of the extra term
        self.cql_alpha, self.num_sampled = float(cql_alpha), int(num_sampled_actions)
        self.lagrange, self.target_action_gap = lagrange, float(target_action_gap)
        self.importance_sample = bool(importance_sample)
        self.bc_steps = int(bc_steps)
        self.log_alpha_prime = nn.Parameter(torch.zeros((), device=self.device))
        self.alpha_prime = FlatParams([self.log_alpha_prime])
        self.alpha_prime_opt = Adam(self.alpha_prime.parameters(), lagrange_lr)

    def cql_logsumexp(self, obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """The importance-sampled logsumexp of every critic at each state ``[k, B]`` (gradients reach the critics only)."""
        net, n = self.net, self.num_sampled
        b, d = obs.shape[0], net.act_dim
        with torch.no_grad():
            uniform = torch.rand((b * n, d), generator=self.gen).to(obs.device) * 2.0 - 1.0
            both = torch.cat([obs, next_obs]).repeat_interleave(n, dim=0)  # [2 B N, obs]
            mean, log_std = net.policy(both)
            action, log_pi = tanh_gaussian_sample(mean, log_std, randn(mean.shape, self.gen, mean.device))
        obs_rep = obs.repeat_interleave(n, dim=0)
        # One critic call for the 3 proposals, all at s: uniform, pi(.|s) and pi(.|s').
        q = net.critic(torch.cat([obs_rep, obs_rep, obs_rep]), torch.cat([uniform, action[:b * n], action[b * n:]]))
        q = q.reshape(q.shape[0], 3, b, n)
        if not self.importance_sample:
            return cql_plain_logsumexp(q[:, 0], q[:, 1], q[:, 2])
        log_pi = log_pi.reshape(2, b, n)
        return cql_importance_logsumexp(q[:, 0], q[:, 1], log_pi[0], q[:, 2], log_pi[1], d)

    def _autograd_gradients(self, obs: torch.Tensor, next_obs: torch.Tensor, batch: dict[str, torch.Tensor],
                            weights: torch.Tensor | None, alpha: torch.Tensor, policy_step: bool
                            ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        metrics, td = super()._autograd_gradients(obs, next_obs, batch, weights, alpha, policy_step)
        if policy_step and self.steps < self.bc_steps:
            # The authors' warm start (policy_eval_start): the policy's SAC gradient is replaced by
            # that of ``alpha * log pi(a|s) - log pi(a_data|s)``; the critics learn as always.
            self.policy.zero_grad()
            mean, log_std = self.net.policy(obs)
            _, log_pi = tanh_gaussian_sample(mean, log_std, randn(mean.shape, self.gen, mean.device))
            (alpha * log_pi.mean() + bc_nll_loss(mean, log_std, batch["action"])).backward()
            metrics["loss_bc"] = bc_nll_loss(mean.detach(), log_std.detach(), batch["action"])
        if self.cql_alpha == 0.0:
            return metrics, td
        # The SAC losses' gradients are in .grad; the CQL term's are added by a second backward pass.
        gap = cql_continuous_regulariser(self.cql_logsumexp(obs, next_obs), self.net.critic(obs, batch["action"]))
        scaled = self.cql_alpha * gap  # [k]
        if self.lagrange:
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)
            term = (alpha_prime.detach() * (scaled - self.target_action_gap)).sum() * 0.5
            self.alpha_prime.zero_grad()
            # Dual ascent on alpha': its loss is minus the constraint term (as in the authors' code).
            (-(alpha_prime * (scaled.detach() - self.target_action_gap)).sum() * 0.5).backward()
            self.alpha_prime_opt.step()
            metrics["cql_alpha_prime"] = alpha_prime.detach()
        else:
            term = 0.5 * scaled.sum()
        term.backward()
        metrics["cql_gap"] = gap.detach().mean()
        return metrics, td

    def state(self) -> dict[str, Any]:
        return {**super().state(), "log_alpha_prime": self.log_alpha_prime.detach().clone(),
                "alpha_prime_opt": optimizer_state(self.alpha_prime_opt)}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        with torch.no_grad():
            self.log_alpha_prime.copy_(state["log_alpha_prime"])
        load_optimizer_state(self.alpha_prime_opt, state["alpha_prime_opt"])
