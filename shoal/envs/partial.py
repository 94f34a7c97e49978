"""Partially observed classic control: envs whose observation hides what a memory must infer.

``shoal/CartPoleNoVel-v1`` is CartPole-v1 with the observation cut to the cart position
and the pole angle: the dynamics, seeding, rewards, termination and 500-step time limit
are CartPole-v1's own (tested step for step), but the velocities must be inferred from
successive observations, so a policy needs memory (or stacked frames) to balance well.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

#: The CartPole state components kept: cart position and pole angle.
NOVEL_KEEP = (0, 2)


def novel_space(full: spaces.Box) -> spaces.Box:
    """The CartPole observation space restricted to position and angle."""
    keep = list(NOVEL_KEEP)
    return spaces.Box(full.low[keep], full.high[keep], dtype=np.float32)


class CartPoleNoVel(CartPoleEnv):
    """CartPole-v1 observing only ``[x, theta]``."""

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        super().__init__(render_mode=render_mode, **kwargs)
        full = self.observation_space
        assert isinstance(full, spaces.Box)
        self.observation_space = novel_space(full)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        obs, info = super().reset(seed=seed, options=options)
        return obs[list(NOVEL_KEEP)], info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = super().step(action)
        return obs[list(NOVEL_KEEP)], reward, terminated, truncated, info
