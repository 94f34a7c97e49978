"""MountainCar-v0, numpy-batched: Gymnasium 1.4's ``MountainCarEnv`` dynamics for N copies at once.

All arithmetic is float64 as in Gymnasium (``math.cos`` and numpy's float64 cos agree
bit for bit); observations are the float32 cast of the state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from shoal.envs.batched.base import BatchedVectorEnv


class BatchedMountainCar(BatchedVectorEnv):
    """``MountainCar-v0`` (three discrete pushes, reward -1 per step, 200-step limit) for ``num_envs`` copies."""

    gym_id = "MountainCar-v0"
    default_max_episode_steps = 200
    draws_per_reset = 1

    min_position = -1.2
    max_position = 0.6
    max_speed = 0.07
    goal_position = 0.5
    goal_velocity = 0
    force = 0.001
    gravity = 0.0025

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(num_envs, max_episode_steps, seed, render_mode)
        self._state = np.zeros((2, self.num_envs), dtype=np.float64)  # position, velocity

    def _make_spaces(self) -> tuple[spaces.Space, spaces.Space]:
        low = np.array([self.min_position, -self.max_speed], dtype=np.float32)
        high = np.array([self.max_position, self.max_speed], dtype=np.float32)
        return spaces.Box(low, high, dtype=np.float32), spaces.Discrete(3)

    def _reset_rows(self, rows: np.ndarray, u: np.ndarray, options: dict[str, Any] | None) -> None:
        low, high = self._bounds(options, -0.6, -0.4)
        self._state[0, rows] = low + (high - low) * u[:, 0]
        self._state[1, rows] = 0.0

    def _observe(self, rows: np.ndarray | None) -> np.ndarray:
        src = self._state if rows is None else self._state[:, rows]
        out = np.empty((src.shape[1], 2), dtype=np.float32)
        out[...] = src.T
        return out

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check_actions(actions, (self.num_envs,), integer=True)
        position, velocity = self._state
        push = (actions.astype(np.int64, copy=False) - 1) * self.force
        push += np.cos(3 * position) * (-self.gravity)
        velocity += push
        np.clip(velocity, -self.max_speed, self.max_speed, out=velocity)
        position += velocity
        np.clip(position, self.min_position, self.max_position, out=position)
        velocity[(position == self.min_position) & (velocity < 0)] = 0.0
        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        return np.full(self.num_envs, -1.0), terminated
