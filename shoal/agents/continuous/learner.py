"""Learners of DDPG, TD3, SAC and D4PG: sample replay, one backward pass, flat Adam steps, target updates.

Each gradient step computes the critic loss and (on policy steps) the policy loss and
SAC's temperature loss, then runs a single backward pass over their sum. The policy loss
reads the critics through detached weights, so each loss reaches only its own network's
parameters; the policy therefore follows the critic from before this step's critic update
(as Acme's DDPG/D4PG learners do), which saves a second backward pass.

With ReLU networks (the default), SAC computes those same gradients by hand
(:mod:`~shoal.agents.continuous.sac_fused`), with no autograd graph and its large
intermediates kept in a workspace from step to step (or, where its large products run in
oneDNN, in the fresh blocks oneDNN returns, which a process that retains freed memory
reuses without page faults). DDPG/TD3 run each network call as one autograd node
(:mod:`~shoal.agents.continuous.fused`): less bookkeeping than layer-by-layer autograd,
but each call still allocates its intermediates and gradients afresh. Both give the same
losses and updates as plain autograd.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoal.agents.continuous.config import D4PGConfig, DDPGConfig, OffPolicyConfig, SACConfig
from shoal.agents.continuous.distributions import tanh_gaussian_sample
from shoal.agents.continuous.loss import (
    categorical_critic_loss,
    critic_loss,
    default_target_entropy,
    dpg_actor_loss,
    min_over_critics,
    sac_actor_loss,
    sac_alpha_loss,
    td_target,
)
from shoal.agents.continuous.networks import ContinuousNetworks
from shoal.agents.continuous.sac_fused import FusedSACStep, supports
from shoal.agents.continuous.targets import d4pg_target_probs, dpg_next_value, sac_next_value
from shoal.core.device import randn, to_device
from shoal.core.interfaces import Learner, Table
from shoal.core.nonfinite import NonFiniteGuard
from shoal.core.schedules import LinearSchedule
from shoal.data import importance_weights
from shoal.nets.optim import Adam, FlatParams, clip_grad_norm_, load_optimizer_state, optimizer_state, polyak_update_
from shoal.returns.categorical import categorical_mean

FIELDS = ("obs", "action", "reward", "discount", "next_obs")


class OffPolicyLearner(Learner):
    """Replay sampling, prioritized-replay bookkeeping, variables and checkpoints; subclasses do the update.

    ``table`` is a :class:`~shoal.data.ReplayTable` or anything else with its ``try_sample``,
    ``update_priorities`` and ``len`` (the Ape-X learner's batch feed).
    """

    def __init__(self, net: ContinuousNetworks, cfg: OffPolicyConfig, table: Table, total_steps: int,
                 seed: int, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.cfg, self.table = cfg, table
        # A CPU generator on every device (noise is drawn here, then moved): the same seed gives
        # the same noise, and checkpoints that load, on the CPU and on a GPU.
        self.gen = torch.Generator().manual_seed(seed)
        # Flat buffers are built after .to(device): moving afterwards would break the views.
        self.critic = FlatParams(net.critic.parameters())
        self.critic_target = FlatParams(net.critic_target.parameters(), grads=False)
        self.policy = FlatParams(net.policy.parameters())
        self.policy_target = (FlatParams(net.policy_target.parameters(), grads=False)
                              if net.policy_target is not None else None)
        self.critic_opt = Adam(self.critic.parameters(), cfg.critic_lr, eps=cfg.adam_eps)
        self.policy_opt = Adam(self.policy.parameters(), cfg.actor_lr, eps=cfg.adam_eps)
        self.beta = LinearSchedule(cfg.priority_beta, 1.0, max(1, int(total_steps * cfg.replay_ratio)))
        self.version = 0
        self.steps = 0
        # Actors need only the policy, unless they compute priorities with the critics too.
        keys = list(net.state_dict()) if cfg.actor_priorities else net.acting_keys
        live = net.state_dict()  # views of the flat buffers: always current
        self._live = {k: live[k] for k in keys}
        self._variables: tuple[int, dict[str, torch.Tensor]] | None = None
        self._policy_metrics: dict[str, torch.Tensor] = {}  # repeated on steps without a policy update
        self.guard = NonFiniteGuard()
        """Skips (or stops on) an update with a NaN or inf in its inputs, loss or gradients."""
        self._groups: dict[str, list[torch.nn.Parameter]] = {"critic": self.critic.parameters(), "policy": self.policy.parameters()}

    # -- the Learner interface -------------------------------------------------------------------
    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        """``(version, what actors need)``: a snapshot on the CPU, taken once per version."""
        if self._variables is None or self._variables[0] != self.version:
            self._variables = (self.version, {k: v.detach().to("cpu", copy=True) for k, v in self._live.items()})
        return self._variables

    def step(self, data: Any = None) -> dict[str, torch.Tensor]:
        """One gradient step on a replayed batch; metrics are 0-d tensors (the non-finite check is the one sync)."""
        cfg = self.cfg
        sample = self.table.try_sample(cfg.batch_size)  # type: ignore[attr-defined]
        if sample is None:  # nothing stored yet (e.g. n-step items still pending)
            return {}
        items, keys, probs = sample
        batch = {k: to_device(torch.from_numpy(np.ascontiguousarray(items[k])), self.device) for k in FIELDS}
        weights = None
        if cfg.prioritized:
            w = importance_weights(probs, len(self.table), self.beta(self.steps))
            weights = to_device(torch.from_numpy(w), self.device)
        metrics, td = self._update(batch, weights)
        if cfg.prioritized:
            priorities = td.abs().mean(0).double().cpu().numpy() + cfg.priority_eps
            if self.guard.last_skipped:  # a non-finite item gets the least priority: seldom drawn again
                priorities[~np.isfinite(priorities)] = cfg.priority_eps
            self.table.update_priorities(keys, priorities)
        if self.guard.last_skipped:  # parameters, optimisers, targets, statistics and counters stay as they were
            return self._guard_metrics()
        # Statistics move only after the update, so this step's targets and losses agree.
        self.net.obs_norm.update(batch["obs"].reshape(len(keys), -1))
        self.steps += 1
        self.version += 1
        return {**metrics, **self._guard_metrics()}

    def _guard_metrics(self) -> dict[str, torch.Tensor]:
        return {k: torch.tensor(v) for k, v in self.guard.metrics().items()}

    def _update(self, batch: dict[str, torch.Tensor], weights: torch.Tensor | None
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One update: ``(metrics, errors [k, B])``; an item's new priority is ``mean_k |errors| + eps``."""
        raise NotImplementedError

    def _finite(self, losses: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> bool:
        """The guard's verdict on this update's ``losses`` and every flat gradient (after backward, before any step)."""
        return self.guard.check(losses, self._groups, batch)

    def _clip(self, flat: FlatParams) -> None:
        if self.cfg.max_grad_norm > 0:
            clip_grad_norm_(flat.parameters(), self.cfg.max_grad_norm)

    def state(self) -> dict[str, Any]:
        return {"networks": self.net.state_dict(), "critic_opt": optimizer_state(self.critic_opt),
                "policy_opt": optimizer_state(self.policy_opt), "generator": self.gen.get_state(),
                "version": self.version, "steps": self.steps}

    def load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["networks"])
        load_optimizer_state(self.critic_opt, state["critic_opt"])
        load_optimizer_state(self.policy_opt, state["policy_opt"])
        self.gen.set_state(state["generator"])
        self.version = int(state["version"])
        self.steps = int(state["steps"])
        self._variables = None


class DPGLearner(OffPolicyLearner):
    """DDPG and TD3: ``num_critics``, ``policy_delay`` and ``target_noise`` select the variant.

    :meth:`_critic_terms`, :meth:`_policy_value` and :meth:`_update_targets` are what D4PG replaces.
    """

    cfg: DDPGConfig

    def _critic_terms(self, obs: torch.Tensor, next_obs: torch.Tensor, batch: dict[str, torch.Tensor],
                      weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(critic loss, errors [k, B], mean Q)``: squared TD errors to ``r + discount * min_i Q'_i(s', mu'(s'))``."""
        cfg, net = self.cfg, self.net
        with torch.no_grad():
            y = td_target(batch["reward"], batch["discount"],
                          dpg_next_value(net, next_obs, cfg.target_noise, cfg.target_noise_clip, self.gen))
        q = net.critic(obs, batch["action"])
        loss, td = critic_loss(q, y, weights)
        return loss, td, q.detach().mean()

    def _policy_value(self, obs: torch.Tensor) -> torch.Tensor:
        """``Q(s, mu(s))`` ``[B]`` through detached critic weights: TD3 (and DDPG) follow the first critic."""
        return self.net.critic(obs, self.net.policy(obs), detach_params=True, members=1)[0]

    def _update_targets(self) -> None:
        """Polyak-average the target networks towards the online ones (after each policy update)."""
        polyak_update_(self.critic_target.data, self.critic.data, self.cfg.tau)
        assert self.policy_target is not None
        polyak_update_(self.policy_target.data, self.policy.data, self.cfg.tau)

    def _update(self, batch: dict[str, torch.Tensor], weights: torch.Tensor | None
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        cfg, net = self.cfg, self.net
        obs, next_obs = net.normalize(batch["obs"]), net.normalize(batch["next_obs"])
        loss, td, q_mean = self._critic_terms(obs, next_obs, batch, weights)
        metrics = {"loss_critic": loss.detach(), "q": q_mean}
        policy_step = self.steps % cfg.policy_delay == 0
        if policy_step:
            loss_pi = dpg_actor_loss(self._policy_value(obs))
            loss = loss + loss_pi
            self._policy_metrics = {"loss_actor": loss_pi.detach()}
        metrics.update(self._policy_metrics)
        self.critic.zero_grad()
        self.policy.zero_grad()
        loss.backward()
        if not self._finite([loss], batch):
            self._policy_metrics = {}
            return metrics, td
        self._clip(self.critic)
        self.critic_opt.step()
        if policy_step:
            self._clip(self.policy)
            self.policy_opt.step()
            self._update_targets()
        return metrics, td


class D4PGLearner(DPGLearner):
    """D4PG: a categorical critic trained by cross-entropy to projected n-step targets; the policy
    follows the mean of its distribution. Priorities are the per-item KL divergences to the target."""

    cfg: D4PGConfig

    def __init__(self, net: ContinuousNetworks, cfg: D4PGConfig, table: Table, total_steps: int,
                 seed: int, device: str = "cpu") -> None:
        super().__init__(net, cfg, table, total_steps, seed, device)
        assert net.support is not None, "D4PGLearner needs networks with a distributional critic (a support)"
        self.policy_updates = 0

    @property
    def support(self) -> torch.Tensor:
        """The critic's atoms, read from the network (so they follow it to any device)."""
        assert self.net.support is not None
        return self.net.support

    def _critic_terms(self, obs: torch.Tensor, next_obs: torch.Tensor, batch: dict[str, torch.Tensor],
                      weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(weighted mean cross-entropy, KL divergences [1, B] (the priorities), mean Q)``."""
        cfg, net = self.cfg, self.net
        with torch.no_grad():
            target = d4pg_target_probs(net, next_obs, batch["reward"], batch["discount"], cfg.target_noise,
                                       cfg.target_noise_clip, self.gen)
        logits = net.critic(obs, batch["action"])[0]
        loss, ce = categorical_critic_loss(logits, target, weights)
        q_mean = categorical_mean(torch.softmax(logits.detach(), -1), self.support).mean()
        return loss, ce.unsqueeze(0), q_mean

    def _policy_value(self, obs: torch.Tensor) -> torch.Tensor:
        """The mean ``sum_j p_j(s, mu(s)) z_j`` of the critic's distribution, through detached weights."""
        logits = self.net.critic(obs, self.net.policy(obs), detach_params=True, members=1)[0]
        return categorical_mean(torch.softmax(logits, -1), self.support)

    def _update_targets(self) -> None:
        """Polyak (``target_update_period=0``), or a full copy every ``target_update_period`` policy updates."""
        self.policy_updates += 1
        period = self.cfg.target_update_period
        if period == 0:
            super()._update_targets()
        elif self.policy_updates % period == 0:
            assert self.policy_target is not None
            self.critic_target.data.copy_(self.critic.data)
            self.policy_target.data.copy_(self.policy.data)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "policy_updates": self.policy_updates}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.policy_updates = int(state["policy_updates"])


class SACLearner(OffPolicyLearner):
    """SAC with twin critics and (by default) an automatically tuned temperature."""

    cfg: SACConfig

    def __init__(self, net: ContinuousNetworks, cfg: SACConfig, table: Table, total_steps: int,
                 seed: int, device: str = "cpu") -> None:
        super().__init__(net, cfg, table, total_steps, seed, device)
        assert net.log_alpha is not None
        self.alpha = FlatParams([net.log_alpha])
        self.alpha_opt = Adam(self.alpha.parameters(), cfg.alpha_lr, eps=cfg.adam_eps)
        self.target_entropy = (default_target_entropy(net.act_dim) if cfg.target_entropy is None
                               else float(cfg.target_entropy))
        self._groups["temperature"] = self.alpha.parameters()
        # ReLU networks take hand-written gradients (the same losses, no autograd graph).
        self.fused = FusedSACStep(self.net) if supports(self.net) else None

    def _update(self, batch: dict[str, torch.Tensor], weights: torch.Tensor | None
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        cfg, net = self.cfg, self.net
        assert net.log_alpha is not None
        obs, next_obs = net.normalize(batch["obs"]), net.normalize(batch["next_obs"])
        alpha = net.log_alpha.detach().exp()
        policy_step = self.steps % cfg.policy_delay == 0
        if self.fused is not None:
            metrics, td, policy_metrics = self.fused(obs, batch["action"], batch["reward"], batch["discount"], next_obs,
                                                     weights, alpha, self.gen, policy_step,
                                                     self.target_entropy if cfg.autotune else None)
            if policy_step:
                self._policy_metrics = policy_metrics
        else:
            metrics, td = self._autograd_gradients(obs, next_obs, batch, weights, alpha, policy_step)
        terms = {**metrics, **(self._policy_metrics if policy_step else {})}  # this update's own terms
        if not self._finite([v for v in terms.values() if isinstance(v, torch.Tensor)], batch):
            self._policy_metrics = {}
            return metrics, td
        metrics.update(self._policy_metrics)
        self._clip(self.critic)
        self.critic_opt.step()
        if policy_step:
            self._clip(self.policy)
            self.policy_opt.step()
            if cfg.autotune:
                self.alpha_opt.step()
        if self.steps % cfg.target_every == 0:
            polyak_update_(self.critic_target.data, self.critic.data, cfg.tau)
        return metrics, td

    def _autograd_gradients(self, obs: torch.Tensor, next_obs: torch.Tensor, batch: dict[str, torch.Tensor],
                            weights: torch.Tensor | None, alpha: torch.Tensor, policy_step: bool
                            ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The losses' gradients into ``.grad`` by one backward pass (networks :class:`FusedSACStep` does not cover)."""
        cfg, net = self.cfg, self.net
        assert net.log_alpha is not None
        with torch.no_grad():
            y = td_target(batch["reward"], batch["discount"], sac_next_value(net, next_obs, alpha, self.gen))
        q = net.critic(obs, batch["action"])
        loss, td = critic_loss(q, y, weights)
        metrics = {"loss_critic": loss.detach(), "q": q.detach().mean(), "alpha": alpha}
        if policy_step:
            mean, log_std = net.policy(obs)
            noise = randn(mean.shape, self.gen, mean.device)
            action, log_prob = tanh_gaussian_sample(mean, log_std, noise)
            q_pi = min_over_critics(net.critic(obs, action, detach_params=True))
            loss_pi = sac_actor_loss(log_prob, q_pi, alpha)
            loss = loss + loss_pi
            if cfg.autotune:
                loss = loss + sac_alpha_loss(net.log_alpha, log_prob, self.target_entropy)
            self._policy_metrics = {"loss_actor": loss_pi.detach(), "entropy": -log_prob.detach().mean()}
        self.critic.zero_grad()
        self.policy.zero_grad()
        self.alpha.zero_grad()
        loss.backward()
        return metrics, td

    def state(self) -> dict[str, Any]:
        return {**super().state(), "alpha_opt": optimizer_state(self.alpha_opt)}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        load_optimizer_state(self.alpha_opt, state["alpha_opt"])
