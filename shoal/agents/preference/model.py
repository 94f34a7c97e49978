"""An ensemble of K small MLPs ``r(s, a)`` evaluated in one batched pass, and its output normaliser.

Member ``k`` has its own weights; a forward pass on ``[N, obs + act]`` inputs returns every
member's reward ``[K, N]`` (one ``baddbmm`` per layer, no loop over members). Inputs are
standardised with statistics frozen into buffers by :meth:`RewardEnsemble.set_input_stats`
(fitted on the experience held at the first training, then fixed so the learned function does
not shift under the labels), so the net sees inputs of unit scale whatever the env's units.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from shoal.nets.normalize import RunningMeanStd

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "elu": nn.functional.elu, "silu": nn.functional.silu}


class RewardEnsemble(nn.Module):
    """``K`` MLPs ``r_k(s, a)``; :meth:`forward` gives ``[K, N]`` rewards for ``N`` (obs, action) rows."""

    in_mean: torch.Tensor
    in_std: torch.Tensor

    def __init__(self, obs_dim: int, act_dim: int, num_members: int, hidden: Sequence[int],
                 activation: str = "relu", generator: torch.Generator | None = None, num_actions: int = 0) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.num_actions = int(num_actions)
        """Discrete actions: how many (actions come as indices and enter one-hot); 0: continuous."""
        self.num_members = int(num_members)
        self.in_dim = int(obs_dim + (self.num_actions if self.num_actions else act_dim))
        self.activation = activation
        sizes = [self.in_dim, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per member
            self.weights.append(nn.Parameter(torch.empty(num_members, fan_in, fan_out).uniform_(-bound, bound, generator=generator)))
            self.biases.append(nn.Parameter(torch.empty(num_members, 1, fan_out).uniform_(-bound, bound, generator=generator)))
        self.register_buffer("in_mean", torch.zeros(self.in_dim))
        self.register_buffer("in_std", torch.ones(self.in_dim))

    def set_input_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardise inputs with this mean and std from now on (std floored at 1e-3)."""
        self.in_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.in_std.copy_(torch.as_tensor(np.maximum(std, 1e-3), dtype=torch.float32))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Rewards ``[K, N]`` of ``inputs`` ``[N, in_dim]`` (the same rows for every member) or
        ``[K, N, in_dim]`` (each member its own rows)."""
        x = (inputs - self.in_mean) / self.in_std
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.num_members, -1, -1)
        act = _ACTIVATIONS[self.activation]
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = act(x)
        return x.squeeze(-1)


def model_inputs(obs: np.ndarray, action: np.ndarray, num_actions: int = 0) -> np.ndarray:
    """``[N, obs + act]`` float32 rows from observations ``[N, ...]`` and actions ``[N, ...]``.

    With ``num_actions`` > 0 the actions are discrete indices and enter one-hot (``num_actions`` columns),
    so the reward of each action is its own function rather than one of the index's value.
    """
    n = len(obs)
    if num_actions:
        act = np.eye(num_actions, dtype=np.float32)[np.asarray(action).reshape(n).astype(np.int64)]
    else:
        act = np.asarray(action, np.float32).reshape(n, -1)
    return np.concatenate([np.asarray(obs, np.float32).reshape(n, -1), act], axis=1)


class OutputNormalizer:
    """Running mean and std of the ensemble's mean reward; ``(r - mean) / std * scale`` is what the RL learner gets.

    The statistics follow the model's outputs on the experience that arrives (:meth:`update`) and are
    :meth:`reset` after each retraining (then refit on recent experience), so they describe the current model.
    """

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)
        self.stats = RunningMeanStd(())

    def reset(self) -> None:
        """Forget the statistics (the model changed)."""
        self.stats = RunningMeanStd(())

    def update(self, rewards: np.ndarray) -> None:
        """Fold a batch of raw ensemble-mean rewards ``[N]`` into the statistics."""
        self.stats.update(np.asarray(rewards, np.float64).reshape(-1))

    def __call__(self, rewards: np.ndarray) -> np.ndarray:
        """Normalised rewards, float32."""
        std = math.sqrt(float(self.stats.var)) + 1e-8
        return ((np.asarray(rewards, np.float64) - float(self.stats.mean)) / std * self.scale).astype(np.float32)

    def state(self) -> dict[str, Any]:
        return self.stats.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.stats.load_state(state)
