"""The continuous-control actor and policies: explore in ``[-1, 1]``, act in the env's bounds.

What the env sees is the ``[-1, 1]`` action rescaled to the env's bounds; what replay
stores is the ``[-1, 1]`` action itself (the networks' scale), so targets and losses never
see env units. :meth:`ContinuousActor.observe` ignores the env-scale action it is handed
and records the one it chose.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from shoal.agents.continuous.distributions import tanh_gaussian_sample
from shoal.agents.continuous.networks import ContinuousNetworks
from shoal.agents.continuous.noise import GaussianNoise, OrnsteinUhlenbeckNoise
from shoal.agents.continuous.targets import td_priorities
from shoal.core.interfaces import Actor
from shoal.core.types import StepResult
from shoal.data import NStepTransitionAdder
from shoal.nets.heads import LOG_STD_MAX, LOG_STD_MIN
from shoal.nets.numpy_mlp import NumpyObsNorm, mlp_from_module, on_cpu_float32


class NumpyPolicy:
    """The policy network of DDPG, TD3 or SAC evaluated with numpy on views of its parameters.

    :meth:`__call__` returns what the torch policy returns on normalised observations:
    ``mu(obs)`` in ``[-1, 1]`` for a deterministic policy, ``(mean, log_std)`` (log-std
    clamped) of the pre-squash Gaussian for SAC.
    """

    def __init__(self, net: ContinuousNetworks) -> None:
        if not NumpyPolicy.supports(net):
            raise ValueError("NumpyPolicy needs a policy MLP with relu or tanh activations on the CPU")
        self.stochastic = net.stochastic
        self.norm = NumpyObsNorm(net.obs_norm)
        self.mlp = mlp_from_module(net.policy.net)
        assert self.mlp is not None

    @staticmethod
    def supports(net: nn.Module) -> bool:
        """True for a ContinuousNetworks policy MLP numpy can evaluate, on the CPU."""
        return (isinstance(net, ContinuousNetworks) and mlp_from_module(net.policy.net) is not None
                and on_cpu_float32(net.policy) and on_cpu_float32(net.obs_norm))

    def current(self) -> bool:
        """False when the policy's parameters were re-pointed since this was built."""
        return self.mlp.current()  # type: ignore[union-attr]

    def __call__(self, obs: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        out = self.mlp(self.norm(np.asarray(obs).reshape(len(obs), -1)))  # type: ignore[misc]
        if not self.stochastic:
            return np.tanh(out, out=out)
        mean, log_std = np.split(out, 2, axis=-1)
        return mean, np.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)

    def mode(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic action in ``[-1, 1]`` (``tanh(mean)`` for SAC)."""
        out = self(obs)
        return np.tanh(out[0]) if isinstance(out, tuple) else out


def numpy_policy(net: ContinuousNetworks, engine: str = "auto") -> NumpyPolicy | None:
    """A :class:`NumpyPolicy` when ``engine`` is numpy, or auto and the policy is eligible; None for torch."""
    if engine == "numpy" or (engine == "auto" and NumpyPolicy.supports(net)):
        return NumpyPolicy(net)
    return None


class ContinuousActor(Actor):
    """Steps ``num_envs`` copies: uniform random actions during warm-up, then the policy plus noise.

    Deterministic policies (DDPG, TD3) explore with ``noise`` (Gaussian or Ornstein-Uhlenbeck);
    SAC samples its squashed Gaussian. Transitions go to an n-step adder; :meth:`drain` hands
    them over, with a ``priority`` per item when ``compute_priorities`` (Ape-X actors).
    Eligible policy MLPs run with numpy (:class:`NumpyPolicy`; SAC's noise then comes from
    the actor's numpy generator), others with torch.
    """

    def __init__(self, net: ContinuousNetworks, cfg: Any, num_envs: int, seed: int, sigma: float = 0.0,
                 random_steps: int = 0, compute_priorities: bool = False,
                 adder: NStepTransitionAdder | None = None, engine: str = "auto") -> None:
        self.net, self.cfg = net, cfg
        self.engine = engine
        self.fast = numpy_policy(net, engine)
        self.num_envs, self.act_dim = num_envs, net.act_dim
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.sigma = float(sigma)
        self.noise: GaussianNoise | OrnsteinUhlenbeckNoise | None = None
        if not net.stochastic:
            shape = (num_envs, self.act_dim)
            self.noise = (OrnsteinUhlenbeckNoise(sigma, shape, self.rng, cfg.ou_theta, cfg.ou_dt)
                          if cfg.noise == "ou" else GaussianNoise(sigma, shape, self.rng))
        self.random_steps = int(random_steps)
        self.compute_priorities = compute_priorities
        self.adder = adder if adder is not None else NStepTransitionAdder(cfg.n_step, cfg.gamma)
        self.steps = 0  # env steps taken by this actor (all copies)
        self.version = -1
        self._action: np.ndarray | None = None
        self._scale = net.action_scale.numpy().copy()
        self._bias = net.action_bias.numpy().copy()
        self._targets: dict[tuple[str, ...], list[torch.Tensor]] = {}

    # -- parameters ------------------------------------------------------------------------------
    def load_variables(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Adopt the learner's parameters (any subset of the networks' state dict)."""
        if version == self.version:
            return
        keys = tuple(state_dict)
        if keys not in self._targets:  # resolve names once; later loads are one foreach copy
            mine = self.net.state_dict(keep_vars=True)
            self._targets[keys] = [mine[k].data for k in keys]
        with torch.no_grad():
            torch._foreach_copy_(self._targets[keys], [state_dict[k] for k in keys])
        self.version = version
        if self.fast is not None and not self.fast.current():  # parameters re-pointed: rebuild the views
            self.fast = numpy_policy(self.net, self.engine)

    # -- acting ----------------------------------------------------------------------------------
    def observe_first(self, obs: np.ndarray) -> None:
        self.adder.add_first(obs)
        if self.noise is not None:
            self.noise.reset()

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        b = len(obs)
        if self.steps < self.random_steps:
            action = self.rng.uniform(-1.0, 1.0, (b, self.act_dim)).astype(np.float32)
        elif self.fast is not None:
            if self.net.stochastic:
                mean, log_std = self.fast(obs)
                noise = self.rng.standard_normal(mean.shape, dtype=np.float32)
                action = np.tanh(mean + np.exp(log_std) * noise)
            else:
                assert self.noise is not None
                action = np.clip(self.fast(obs) + self.noise(), -1.0, 1.0)
        else:
            action = self._torch_action(obs)
        self._action = action
        return self._bias + self._scale * action

    @torch.inference_mode()
    def _torch_action(self, obs: np.ndarray) -> np.ndarray:
        """The torch path, for policies :class:`NumpyPolicy` does not cover."""
        x = self.net.normalize(torch.from_numpy(np.asarray(obs)))
        if self.net.stochastic:  # a squashed-Gaussian sample (its log-probability is not needed here)
            mean, log_std = self.net.policy(x)
            return torch.tanh(mean + log_std.exp() * torch.randn(mean.shape, generator=self.gen)).numpy()
        assert self.noise is not None
        return np.clip(self.net.policy(x).numpy() + self.noise(), -1.0, 1.0)

    def observe(self, action: np.ndarray, step: StepResult) -> None:
        """Record the step; ``action`` (env scale) is ignored in favour of the ``[-1, 1]`` one chosen."""
        assert self._action is not None, "select_action must come before observe"
        self.adder.add(self._action, step)
        if self.noise is not None and step.done.any():
            self.noise.reset(step.done)
        self.steps += len(step.reward)

    def drain(self) -> dict[str, np.ndarray] | None:
        """Transitions since the last drain (with ``priority`` when this actor computes priorities)."""
        items = self.adder.drain()
        if items is not None and self.compute_priorities:
            items["priority"] = td_priorities(self.net, self.cfg, items, self.gen, self.cfg.priority_eps)
        return items

    # -- checkpoints -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "generator": self.gen.get_state(), "steps": self.steps,
                "version": self.version, "noise": self.noise.state() if self.noise is not None else {}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.gen.set_state(state["generator"])
        self.steps = int(state["steps"])
        self.version = -1  # reload parameters on the next hand-over
        if self.noise is not None:
            self.noise.load_state(state["noise"])


class ContinuousPolicy:
    """A numpy-in, numpy-out policy in env units: deterministic, or exploring like the actor.

    Deterministic actions of eligible policies are computed with numpy (:class:`NumpyPolicy`).
    """

    def __init__(self, net: ContinuousNetworks, evaluation: bool, sigma: float = 0.1, seed: int = 0,
                 engine: str = "auto") -> None:
        self.net, self.evaluation, self.sigma = net, evaluation, float(sigma)
        self.gen = torch.Generator().manual_seed(seed)
        self.fast = numpy_policy(net, engine) if evaluation else None
        self._scale = net.action_scale.numpy()
        self._bias = net.action_bias.numpy()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.fast is not None:
            return self._bias + self._scale * self.fast.mode(obs)
        return self._torch(obs)

    @torch.inference_mode()
    def _torch(self, obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs))
        if self.evaluation:
            action = self.net.mode(x)
        elif self.net.stochastic:
            mean, log_std = self.net.policy(self.net.normalize(x))
            action = tanh_gaussian_sample(mean, log_std, torch.randn(mean.shape, generator=self.gen))[0]
        else:
            action = self.net.mode(x)
            action = (action + self.sigma * torch.randn(action.shape, generator=self.gen)).clamp(-1.0, 1.0)
        return self.net.scale_action(action).numpy()
