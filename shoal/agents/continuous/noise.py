"""Exploration noise for deterministic policies: Gaussian, Ornstein-Uhlenbeck, per-actor scales.

Noise is added to ``[-1, 1]`` actions, one independent process per env copy, drawn from
the actor's own numpy generator (so an actor's behaviour depends only on its seed).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class GaussianNoise:
    """Independent ``N(0, sigma**2)`` noise each step."""

    def __init__(self, sigma: float, shape: tuple[int, ...], rng: np.random.Generator) -> None:
        self.sigma, self.shape, self.rng = float(sigma), shape, rng

    def __call__(self) -> np.ndarray:
        return (self.sigma * self.rng.standard_normal(self.shape)).astype(np.float32)

    def reset(self, done: np.ndarray | None = None) -> None:
        """Nothing to reset: the noise has no memory."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


class OrnsteinUhlenbeckNoise:
    """Temporally correlated noise ``x += theta * (0 - x) * dt + sigma * sqrt(dt) * N(0, 1)`` (DDPG paper).

    ``reset(done)`` restarts the process at 0 for the copies whose episode ended.
    """

    def __init__(self, sigma: float, shape: tuple[int, ...], rng: np.random.Generator,
                 theta: float = 0.15, dt: float = 0.01) -> None:
        self.sigma, self.theta, self.dt, self.rng = float(sigma), float(theta), float(dt), rng
        self.x = np.zeros(shape, np.float64)

    def __call__(self) -> np.ndarray:
        shock = self.sigma * np.sqrt(self.dt) * self.rng.standard_normal(self.x.shape)
        self.x += -self.theta * self.x * self.dt + shock
        return self.x.astype(np.float32)

    def reset(self, done: np.ndarray | None = None) -> None:
        if done is None:
            self.x[:] = 0.0
        else:
            self.x[np.asarray(done, bool)] = 0.0

    def state(self) -> dict[str, Any]:
        return {"x": self.x.copy()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.x[...] = state["x"]
