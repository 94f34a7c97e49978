"""One-step actor-critic (Sutton & Barto, section 13.5): a TD(0) critic whose TD error weights the policy gradient.

Every hand-over holds ``rollout_length`` steps of ``num_envs`` copies (1 x 1 is the fully
online textbook algorithm). For each transition the learner computes
``delta = r + gamma V(s') - V(s)`` (``V(s') = 0`` after a termination, ``V(final obs)`` after
a time-limit truncation), and takes one gradient step on
``-mean(I * delta * log pi(a|s)) + 0.5 mean(delta^2)`` with ``I = gamma^t`` (t = step in
the episode) when ``discount_actor`` is on, else ``I = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from shoal.agents.pg.actor import GreedyPolicy, RolloutActor, SamplingPolicy
from shoal.agents.pg.loss import policy_gradient_loss, value_loss
from shoal.agents.pg.networks import ActorCritic
from shoal.agents.pg.vanilla import (
    VanillaPGConfig,
    VariableCopier,
    gradient_step,
    learner_state,
    load_learner_state,
    make_two_rate_optimizer,
    make_vanilla_networks,
    set_learning_rates,
)
from shoal.core.interfaces import Builder, Learner, Policy, Table
from shoal.core.nonfinite import NonFiniteGuard, parameter_groups
from shoal.core.types import Rollout, StepResult
from shoal.returns import fold_truncation


@dataclass
class OneStepACConfig(VanillaPGConfig):
    """One-step actor-critic: online TD(0) critic, TD error as the actor's weight."""

    discount_actor: bool = False
    """Multiply the actor's weight by I = gamma^t (t = step within the episode), as in the textbook pseudocode."""
    normalize_td: bool = False
    """Standardise the TD errors used as the actor's weights over each batch (needs num_envs * rollout_length > 1)."""


def one_step_targets(rewards: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
                     final_values: torch.Tensor, gamma: float) -> torch.Tensor:
    """TD(0) targets ``r_t + gamma V(s_{t+1})``: ``r_t`` after a termination, ``r_t + gamma V(final obs)`` after a truncation.

    ``next_values[t]`` is V of the observation acted on after step t (a reset observation where
    the episode ended: the zero discount cuts it out).
    """
    folded, discounts = fold_truncation(rewards, terminated, truncated, final_values, gamma)
    return folded + discounts * next_values


def one_step_ac_loss(logp: torch.Tensor, values: torch.Tensor, targets: torch.Tensor,
                     actor_discount: torch.Tensor | None = None,
                     normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss_pi, loss_v, delta)``: the actor's loss weighted by ``I * delta`` (no gradient) and the critic's ``0.5 delta^2``."""
    delta = (targets - values).detach()
    w = delta if actor_discount is None else actor_discount * delta
    if normalize and w.numel() > 1:
        w = (w - w.mean()) / (w.std() + 1e-8)
    return policy_gradient_loss(logp, w), value_loss(values, targets), delta


class StepCountingActor(RolloutActor):
    """The PPO/A2C rollout actor, also recording each step's index within its episode (for ``I = gamma^t``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ep_step = np.zeros(self.B, np.int64)
        self.step_in_episode = np.zeros((self.T, self.B), np.float32)
        self.copy_in = VariableCopier(self.net)

    def observe_first(self, obs: np.ndarray) -> None:
        super().observe_first(obs)
        self.ep_step[:] = 0

    def observe(self, action: np.ndarray, step: StepResult) -> None:
        self.step_in_episode[self.t] = self.ep_step
        super().observe(action, step)
        self.ep_step += 1
        self.ep_step[step.terminated | step.truncated] = 0

    def load_variables(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        if version != self.version:
            self.copy_in(state_dict)
            self.version = version

    def drain(self) -> Rollout:
        rollout = super().drain()
        rollout.extras["step_in_episode"] = self.step_in_episode.copy()
        return rollout


class OneStepACLearner(Learner):
    """One gradient step per hand-over on the one-step TD errors of every transition in it."""

    def __init__(self, net: ActorCritic, cfg: OneStepACConfig, total_steps: int = 0, device: str = "cpu") -> None:
        self.net = net.to(device)
        self.cfg = cfg
        self.device = torch.device(device)
        self.opt = make_two_rate_optimizer(self.net, cfg)
        self.params = list(self.net.parameters())
        self.version = 0
        self.env_steps = 0
        self.total_steps = max(1, total_steps)
        self.variables = self.net.state_dict(keep_vars=True)
        self.guard = NonFiniteGuard()
        self._groups = parameter_groups(self.net)

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        # Copies, also on the CPU (where .cpu() would alias the live weights): the caller may hold
        # them, labelled with this version, while later steps update the weights in place.
        return self.version, {k: v.detach().to("cpu", copy=True) for k, v in self.variables.items()}

    def step(self, data: Any = None) -> dict[str, float]:
        rollout = Rollout.concat(data) if isinstance(data, list) else data
        cfg, dev = self.cfg, self.device
        r = {n: rollout.tensor(n, dev) for n in ("obs", "actions", "rewards", "terminated", "truncated", "final_values")}
        bootstrap = rollout.tensor("bootstrap_value", dev)
        params, values = self.net(r["obs"])  # [T, B, ...], [T, B]
        with torch.no_grad():
            # V(s_{t+1}): the next step's value under the same (current) parameters, the bootstrap after the last.
            next_values = torch.cat([values[1:].detach(), bootstrap.unsqueeze(0)], 0)
            targets = one_step_targets(r["rewards"], next_values, r["terminated"], r["truncated"], r["final_values"], cfg.gamma)
        discount = cfg.gamma ** rollout.tensor("step_in_episode", dev) if cfg.discount_actor else None
        logp = self.net.dist.log_prob(params, r["actions"])
        loss_pi, loss_v, delta = one_step_ac_loss(logp, values, targets, discount, cfg.normalize_td)
        entropy = self.net.dist.entropy(params).mean()
        lr = set_learning_rates(self.opt, cfg, self.env_steps / self.total_steps)
        grad_norm = gradient_step(self.params, self.opt, loss_pi + loss_v - cfg.ent_coef * entropy, cfg.max_grad_norm,
                                  self.guard, self._groups, r)
        self.env_steps += rollout.num_steps
        if self.guard.last_skipped:  # a NaN or inf: parameters, optimiser and statistics stay as they were
            return {"lr": lr, **self.guard.metrics()}
        self.net.obs_norm.update(r["obs"])
        self.version += 1
        return {"loss_pi": float(loss_pi.detach()), "loss_v": float(loss_v.detach()), "td_error_abs": float(delta.abs().mean()),
                "entropy": float(entropy.detach()), "grad_norm": grad_norm, "lr": lr, **self.guard.metrics()}

    def state(self) -> dict[str, Any]:
        return learner_state(self.net, self.opt, version=self.version, env_steps=self.env_steps)

    def load_state(self, state: dict[str, Any]) -> None:
        load_learner_state(self.net, self.opt, state)
        self.version = int(state["version"])
        self.env_steps = int(state.get("env_steps", 0))


class OneStepACBuilder(Builder):
    """One-step actor-critic on the ``local`` topology (one learner step per hand-over)."""

    config: OneStepACConfig

    def make_networks(self) -> ActorCritic:
        return make_vanilla_networks(self.config, self.env_spec)

    def make_policy(self, networks: nn.Module, evaluation: bool) -> Policy:
        assert isinstance(networks, ActorCritic)
        return GreedyPolicy(networks) if evaluation else SamplingPolicy(networks, self.seed)

    def make_actor(self, networks: nn.Module, num_envs: int, actor_id: int = 0, num_actors: int = 1, seed: int = 0) -> StepCountingActor:
        assert isinstance(networks, ActorCritic)
        return StepCountingActor(networks, self.env_spec, self.config.rollout_length, num_envs, seed)

    def make_learner(self, networks: nn.Module, tables: dict[str, Table]) -> OneStepACLearner:
        assert isinstance(networks, ActorCritic)
        return OneStepACLearner(networks, self.config, self.total_steps, self.device)
