"""A slow simulator: any env whose every step also waits, for fixed or random time.

Real simulators (robotics, games over a socket) spend most of a step waiting, not
computing; this wrapper makes a fast env behave so, to measure how a topology overlaps
that waiting. ``shoal/SlowCartPole-v0`` is CartPole-v1 waiting ``delay_s`` (2 ms by
default) per step; ``jitter="exponential"`` draws each wait from an exponential
distribution with that mean (stragglers).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

from shoal.errors import ConfigError


class SlowEnv(gym.Wrapper):
    """Waits ``delay_s`` seconds (``jitter="fixed"``) or an exponential time of that mean in every step."""

    def __init__(self, env: gym.Env, delay_s: float = 0.002, jitter: str = "fixed", seed: int | None = None) -> None:
        super().__init__(env)
        if delay_s < 0:
            raise ConfigError(f"delay_s must be >= 0, got {delay_s}")
        if jitter not in ("fixed", "exponential"):
            raise ConfigError(f"jitter must be fixed or exponential, got {jitter!r}")
        self.delay_s, self.jitter = float(delay_s), jitter
        self._rng = np.random.default_rng(seed)

    def reset(self, **kwargs: Any) -> Any:
        if kwargs.get("seed") is not None:
            self._rng = np.random.default_rng(kwargs["seed"] + 104729)
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        wait = self.delay_s if self.jitter == "fixed" else float(self._rng.exponential(self.delay_s))
        if wait > 0:
            time.sleep(wait)
        return self.env.step(action)


def slow_cartpole(delay_s: float = 0.002, jitter: str = "fixed", **kwargs: Any) -> gym.Env:
    """CartPole-v1 (with its time limit) that waits in every step."""
    return SlowEnv(gym.make("CartPole-v1", **kwargs), delay_s, jitter)
