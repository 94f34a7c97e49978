"""Pieces shared by the textbook policy-gradient methods: REINFORCE and one-step actor-critic.

Both use the PPO/A2C :class:`~shoal.agents.pg.networks.ActorCritic` network (separate
policy and value MLPs, categorical or Gaussian policy) with one optimiser holding two
learning rates: ``lr`` for the policy and ``vf_lr`` for the value function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from shoal.agents.pg.networks import ActorCritic
from shoal.config import in_range, positive, require
from shoal.core.nonfinite import NonFiniteGuard
from shoal.core.schedules import schedule
from shoal.core.types import EnvSpec
from shoal.nets.optim import Optimizer, clip_grad_norm_, grad_norm, load_optimizer_state, make_optimizer, optimizer_state


@dataclass
class VanillaPGConfig:
    """Settings shared by REINFORCE and one-step actor-critic."""

    num_envs: int = 1
    """Env copies stepped by each actor."""
    rollout_length: int = 1
    """Vector steps per hand-over to the learner."""
    gamma: float = 0.99
    """Discount factor."""
    lr: float = 1e-3
    """Learning rate of the policy."""
    vf_lr: float = 1e-3
    """Learning rate of the value function (baseline or critic)."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """constant, or both learning rates decayed linearly to 0 over the run."""
    optimizer: Literal["adam", "rmsprop", "sgd"] = "adam"
    """Optimiser (sgd is the textbook update)."""
    optimizer_eps: float = 1e-8
    """Epsilon of the adam / rmsprop denominator."""
    ent_coef: float = 0.0
    """Entropy bonus weight."""
    max_grad_norm: float = 0.0
    """Global gradient-norm clip (0: off)."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the policy and value MLPs."""
    activation: str = "tanh"
    """Hidden activation: tanh, relu, elu or silu."""
    log_std_init: float = 0.0
    """Initial log standard deviation of Gaussian policies."""
    normalize_obs: bool = False
    """Normalise observations with running statistics (saved in the checkpoint)."""

    def __post_init__(self) -> None:
        positive(self, "num_envs", "rollout_length", "lr", "vf_lr", "optimizer_eps")
        in_range(self, "gamma", 0.0, 1.0)
        require(self.ent_coef >= 0, f"ent_coef must be >= 0, got {self.ent_coef}")
        require(self.max_grad_norm >= 0, f"max_grad_norm must be >= 0 (0 = off), got {self.max_grad_norm}")
        require(all(h > 0 for h in self.hidden), f"hidden sizes must be > 0, got {list(self.hidden)}")
        require(self.activation in ("tanh", "relu", "elu", "silu"), f"activation must be tanh, relu, elu or silu; got {self.activation!r}")


def make_vanilla_networks(cfg: VanillaPGConfig, spec: EnvSpec) -> ActorCritic:
    """The actor-critic network with separate (unfused) policy and value torsos, so each has its own learning rate."""
    return ActorCritic(spec, cfg.hidden, cfg.activation, False, cfg.log_std_init, cfg.normalize_obs, fused=False)


def make_two_rate_optimizer(net: ActorCritic, cfg: VanillaPGConfig) -> Optimizer:
    """One optimiser, two groups: the policy at ``lr``, the value function at ``vf_lr``."""
    value_ids = {id(p) for p in net.v.parameters()}
    if not net.shared:
        if net.fused:
            raise ValueError("two learning rates need separate policy and value torsos; build the ActorCritic with fused=False")
        value_ids |= {id(p) for p in net.v_torso.parameters()}
    value = [p for p in net.parameters() if id(p) in value_ids]
    policy = [p for p in net.parameters() if id(p) not in value_ids]
    groups = [{"params": policy, "lr": cfg.lr}, {"params": value, "lr": cfg.vf_lr}]
    return make_optimizer(cfg.optimizer, groups, cfg.lr, cfg.optimizer_eps)


class VariableCopier:
    """Copies a state dict into a module's own tensors in place: much cheaper per call than
    ``load_state_dict`` when it happens every env step (falls back to it on a mismatch)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.targets = net.state_dict(keep_vars=True)

    @torch.no_grad()
    def __call__(self, state_dict: dict[str, torch.Tensor]) -> None:
        if state_dict.keys() != self.targets.keys():
            self.net.load_state_dict(state_dict)  # raises a clear error
            return
        for k, t in self.targets.items():
            t.copy_(state_dict[k])


def set_learning_rates(opt: Optimizer, cfg: VanillaPGConfig, progress: float) -> float:
    """Apply ``cfg.lr_schedule`` at ``progress`` (fraction of the run); returns the policy's learning rate."""
    opt.param_groups[0]["lr"] = lr = schedule(cfg.lr, 0.0, progress, cfg.lr_schedule)
    opt.param_groups[1]["lr"] = schedule(cfg.vf_lr, 0.0, progress, cfg.lr_schedule)
    return lr


def gradient_step(params: list[nn.Parameter], opt: Optimizer, loss: torch.Tensor, max_grad_norm: float,
                  guard: NonFiniteGuard | None = None, groups: Mapping[str, list[nn.Parameter]] | None = None,
                  batch: Mapping[str, torch.Tensor] | None = None) -> float:
    """Backward, optional global-norm clip, optimiser step; returns the gradient norm before clipping.

    With ``guard``, a NaN or inf loss or gradient skips the step (NaN returned; ``guard.last_skipped``
    says so) or stops the run; ``groups`` names the parameter groups and ``batch`` the inputs in its message.
    """
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if guard is not None and not guard.check(loss, groups or {"parameters": params}, batch):
        return float("nan")
    if max_grad_norm > 0:
        norm = clip_grad_norm_(params, max_grad_norm)
    else:
        norm = grad_norm([p.grad for p in params if p.grad is not None])
    opt.step()
    return float(norm)


def learner_state(net: nn.Module, opt: Optimizer, **extra: Any) -> dict[str, Any]:
    """A checkpointable learner state: networks, optimiser and plain counters."""
    return {"networks": net.state_dict(), "optimizer": optimizer_state(opt), **extra}


def load_learner_state(net: nn.Module, opt: Optimizer, state: dict[str, Any]) -> None:
    """Restore the networks and optimiser from :func:`learner_state`."""
    net.load_state_dict(state["networks"])
    load_optimizer_state(opt, state["optimizer"])
