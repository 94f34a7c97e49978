"""Running statistics for observation and reward normalisation (checkpointable)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class RunningMeanStd:
    """Parallel-algorithm running mean and variance over a batch axis (numpy)."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = float(epsilon)

    def update(self, x: np.ndarray) -> None:
        """Fold a batch ``[N, *shape]`` into the statistics."""
        x = np.asarray(x, np.float64)
        b_mean, b_var, b_count = x.mean(0), x.var(0), x.shape[0]
        if b_count == 0:
            return
        delta = b_mean - self.mean
        tot = self.count + b_count
        self.mean = self.mean + delta * b_count / tot
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / tot
        self.var = m2 / tot
        self.count = tot

    def state(self) -> dict:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state(self, s: dict) -> None:
        self.mean, self.var, self.count = np.asarray(s["mean"], np.float64), np.asarray(s["var"], np.float64), float(s["count"])


class ObsNormalizer(nn.Module):
    """Normalises observations with running statistics held as buffers (saved with the weights).

    Statistics change only through :meth:`update`, called by the learner on the
    observations it trains on, so actors and evaluation see exactly the learner's view.
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, shape: tuple[int, ...], enabled: bool, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        super().__init__()
        self.enabled = enabled
        self.clip = clip
        self.epsilon = epsilon
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return obs
        return ((obs - self.mean) / torch.sqrt(self.var + self.epsilon)).clamp(-self.clip, self.clip)

    @torch.no_grad()
    def update(self, obs: torch.Tensor) -> None:
        """Fold a batch of raw observations (leading axes flattened) into the statistics."""
        if not self.enabled:
            return
        x = obs.reshape(-1, *self.mean.shape).double()
        b_mean, b_var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        tot = self.count + n
        delta = b_mean - self.mean.double()
        new_mean = self.mean.double() + delta * n / tot
        m2 = self.var.double() * self.count + b_var * n + delta**2 * self.count * n / tot
        self.mean.copy_(new_mean.float())
        self.var.copy_((m2 / tot).float())
        self.count.copy_(tot)


class RewardNormalizer:
    """Scales rewards by the running std of each copy's discounted return (as VecNormalize does)."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        self.rms = RunningMeanStd(())
        self.ret = np.zeros(num_envs, np.float64)
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.ret = self.ret * self.gamma + reward
        self.rms.update(self.ret)
        self.ret[done] = 0.0
        return np.clip(reward / np.sqrt(self.rms.var + self.epsilon), -self.clip, self.clip).astype(np.float32)

    def new_episodes(self) -> None:
        """Every copy starts a new episode: their discounted returns start again from 0."""
        self.ret[:] = 0.0

    def state(self) -> dict:
        return {"rms": self.rms.state(), "ret": self.ret.copy()}

    def load_state(self, s: dict) -> None:
        self.rms.load_state(s["rms"])
        self.ret = np.asarray(s["ret"], np.float64)
