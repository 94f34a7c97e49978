"""Networks of DDPG, TD3, SAC and D4PG: policies, a batched critic ensemble, their target copies.

The critics of one agent (twin critics for TD3 and SAC) are one module whose layers hold
stacked weights ``[k, in, out]``: all critics run in one batched matmul per layer
(``torch.baddbmm``) instead of ``k`` separate networks. Every network works on normalised
observations and ``[-1, 1]`` actions; :meth:`ContinuousNetworks.scale_action` maps those
to the env's bounds. ReLU critics and policies run their layers through
:mod:`~shoal.agents.continuous.fused` (one autograd node per call, hand-written backward).
"""

from __future__ import annotations

import copy
import math
from typing import Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from shoal.agents.continuous.fused import ensemble_relu_mlp, relu_mlp
from shoal.core.types import EnvSpec
from shoal.errors import EnvError
from shoal.nets.heads import LOG_STD_MAX, LOG_STD_MIN
from shoal.nets.normalize import ObsNormalizer
from shoal.nets.torsos import activation, mlp_layers


class EnsembleLinear(nn.Module):
    """``k`` independent linear layers applied in one batched matmul: ``[k, B, in] -> [k, B, out]``."""

    def __init__(self, k: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # what nn.Linear's default initialisation draws from
        self.weight = nn.Parameter(torch.empty(k, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(k, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, detach_params: bool = False, members: int | None = None) -> torch.Tensor:
        """``x`` is ``[B, in]`` (shared by every member) or ``[k, B, in]``; ``members`` keeps the first few."""
        w: torch.Tensor = self.weight
        b: torch.Tensor = self.bias
        if members is not None:
            w, b = w[:members], b[:members]
        if detach_params:
            w, b = w.detach(), b.detach()
        if x.dim() == 2:
            x = x.expand(w.shape[0], *x.shape)
        return torch.baddbmm(b, x, w)


class QEnsemble(nn.Module):
    """``k`` action-value networks ``Q_i(obs, action)`` evaluated together; returns ``[k, B]``.

    With ``out_dim > 1`` each network returns ``out_dim`` outputs (a distributional critic's
    logits over its atoms) and the result is ``[k, B, out_dim]``.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], act: str, k: int,
                 out_dim: int = 1) -> None:
        super().__init__()
        dims = [obs_dim + act_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(k, i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.act = activation(act)()
        self.relu = act == "relu"  # ReLU critics run as one autograd node (fused.py)
        self.k, self.out_dim = k, out_dim

    def forward(self, obs: torch.Tensor, action: torch.Tensor, detach_params: bool = False,
                members: int | None = None) -> torch.Tensor:
        """Q values ``[k, B]`` (``[k, B, out_dim]``); ``detach_params`` lets gradients reach only the inputs."""
        x = torch.cat([obs, action], dim=-1)
        if self.relu:
            params: list[torch.Tensor] = []
            for layer in self.layers:
                assert isinstance(layer, EnsembleLinear)
                params += [layer.weight, layer.bias]
            if members is not None:
                params = [p[:members] for p in params]
            if detach_params:
                params = [p.detach() for p in params]
            out = ensemble_relu_mlp(x, params)
            return out.squeeze(-1) if self.out_dim == 1 else out
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, detach_params, members)
            if i < last:
                x = self.act(x)
        return x.squeeze(-1) if self.out_dim == 1 else x


class _PolicyMLP(nn.Module):
    """A policy's ``Linear, act, ..., Linear`` stack in ``net``; ReLU stacks run as one autograd node (fused.py)."""

    def __init__(self, obs_dim: int, out_dim: int, hidden: Sequence[int], act: str) -> None:
        super().__init__()
        self.net = mlp_layers(obs_dim, hidden, act, out_dim=out_dim, init_gain=None)
        #: The stack's Linear layers when its activation is ReLU (what fused.py covers), else None.
        self.linears = [m for m in self.net if isinstance(m, nn.Linear)] if act == "relu" else None

    def mlp(self, obs: torch.Tensor) -> torch.Tensor:
        """The stack's output on ``obs``."""
        if self.linears is None:
            return self.net(obs)
        params: list[torch.Tensor] = []
        for lin in self.linears:
            params += [lin.weight, lin.bias]
        return relu_mlp(obs, params)


class DeterministicPolicy(_PolicyMLP):
    """``mu(obs) = tanh(MLP(obs))`` in ``[-1, 1]`` (DDPG, TD3)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], act: str) -> None:
        super().__init__(obs_dim, act_dim, hidden, act)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mlp(obs))


class TanhGaussianPolicy(_PolicyMLP):
    """State-dependent mean and log-std of a Gaussian squashed by tanh (SAC)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], act: str) -> None:
        super().__init__(obs_dim, 2 * act_dim, hidden, act)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, log_std)`` of the pre-squash Gaussian; log-std clamped to [-20, 2]."""
        mean, log_std = self.mlp(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


class ContinuousNetworks(nn.Module):
    """Everything DDPG, TD3, SAC or D4PG learns: normaliser, policy, critics and target copies.

    ``policy_target`` exists for the deterministic agents only, ``log_alpha`` for SAC only.
    A ``support`` (D4PG's atoms, ``[N]``) makes the critics distributional: they return
    logits ``[k, B, N]`` over those atoms. The support is a non-persistent buffer: it
    follows the networks to their device but is rebuilt from the config, not loaded.
    Only the policy, the normaliser and the action scale are needed to act (:attr:`acting_keys`);
    :meth:`load_state_dict` accepts a dict holding exactly those.
    """

    action_scale: torch.Tensor
    action_bias: torch.Tensor
    support: torch.Tensor | None

    def __init__(self, spec: EnvSpec, hidden: Sequence[int], act: str, num_critics: int, stochastic: bool,
                 normalize_obs: bool, alpha: float = 1.0, support: torch.Tensor | None = None) -> None:
        super().__init__()
        check_spec(spec)
        obs_dim, act_dim = int(np.prod(spec.obs_shape)), spec.num_actions
        self.obs_dim, self.act_dim, self.stochastic = obs_dim, act_dim, stochastic
        self.obs_norm = ObsNormalizer((obs_dim,), normalize_obs)
        low = torch.as_tensor(spec.action_low, dtype=torch.float32)
        high = torch.as_tensor(spec.action_high, dtype=torch.float32)
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)
        policy_cls = TanhGaussianPolicy if stochastic else DeterministicPolicy
        self.policy = policy_cls(obs_dim, act_dim, hidden, act)
        self.register_buffer("support", None if support is None else support.float().clone(), persistent=False)
        out_dim = 1 if support is None else int(support.shape[0])
        self.critic = QEnsemble(obs_dim, act_dim, hidden, act, num_critics, out_dim)
        self.critic_target = _frozen_copy(self.critic)
        self.policy_target = None if stochastic else _frozen_copy(self.policy)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha))) if stochastic else None

    @property
    def acting_keys(self) -> list[str]:
        """State-dict keys an actor needs to choose actions."""
        return [k for k in self.state_dict() if k.startswith(("policy.", "obs_norm.", "action_"))]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's, but a dict of exactly the :attr:`acting_keys` loads on its own."""
        if strict and set(state_dict) == set(self.acting_keys):
            strict = False
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """Flattened float observations, normalised when enabled."""
        return self.obs_norm(obs.reshape(obs.shape[0], -1).float())

    def scale_action(self, action: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` actions to the env's bounds."""
        return self.action_bias + self.action_scale * action

    @torch.no_grad()
    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action in ``[-1, 1]``: ``mu(obs)``, or ``tanh(mean)`` for SAC."""
        x = self.normalize(obs)
        return torch.tanh(self.policy(x)[0]) if self.stochastic else self.policy(x)


_M = TypeVar("_M", bound=nn.Module)


def _frozen_copy(module: _M) -> _M:
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def check_spec(spec: EnvSpec) -> None:
    """Raise an EnvError unless the env has vector observations and finite continuous actions."""
    if spec.discrete:
        raise EnvError(f"{spec.env_id!r} has discrete actions; DDPG, TD3 and SAC need a Box action space "
                       "(use dqn or ppo for discrete actions)")
    if len(spec.obs_shape) > 1:
        raise EnvError(f"{spec.env_id!r} has observations of shape {spec.obs_shape}; the continuous agents take "
                       "flat vector observations (flatten them with a wrapper)")
    low, high = np.asarray(spec.action_low), np.asarray(spec.action_high)
    if not (np.isfinite(low).all() and np.isfinite(high).all() and (high > low).all()):
        raise EnvError(f"{spec.env_id!r} has action bounds low={low.tolist()} high={high.tolist()}; the continuous "
                       "agents rescale [-1, 1] to finite bounds, so wrap the env to give finite ones")
