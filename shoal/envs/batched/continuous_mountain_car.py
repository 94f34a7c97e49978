"""MountainCarContinuous-v0, numpy-batched: Gymnasium 1.4's ``Continuous_MountainCarEnv`` for N copies.

Gymnasium's precision here is subtle and we reproduce it exactly (NumPy 2 scalar rules):

* after ``reset`` the state is a float64 array, after any step a float32 array, so the
  first step of an episode runs in float64 and later steps in float32;
* the force is the float32 action when it lies in [-1, 1], but the Python float ±1.0
  when clipped, which changes the precision of ``force * power - 0.0025 * cos(3 x)``;
* comparisons of float32 values with Python floats compare against the float32 constant.

Actions are cast to float32 (the action space's dtype) first, as Gymnasium sees them from
``action_space.sample()``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from shoal.envs.batched.base import BatchedVectorEnv

_F = np.float32


class BatchedMountainCarContinuous(BatchedVectorEnv):
    """``MountainCarContinuous-v0`` (+100 at the goal, -0.1 a², 999-step limit) for ``num_envs`` copies."""

    gym_id = "MountainCarContinuous-v0"
    default_max_episode_steps = 999
    draws_per_reset = 1

    min_action = -1.0
    max_action = 1.0
    min_position = -1.2
    max_position = 0.6
    max_speed = 0.07
    goal_position = 0.45
    goal_velocity = 0
    power = 0.0015

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(num_envs, max_episode_steps, seed, render_mode)
        n = self.num_envs
        self._pos = np.zeros(n, dtype=np.float32)
        self._vel = np.zeros(n, dtype=np.float32)
        self._pos0 = np.zeros(n, dtype=np.float64)  # float64 start position, used by the first step
        self._fresh = np.zeros(n, dtype=np.bool_)  # state is still the float64 reset state

    def _make_spaces(self) -> tuple[spaces.Space, spaces.Space]:
        low = np.array([self.min_position, -self.max_speed], dtype=np.float32)
        high = np.array([self.max_position, self.max_speed], dtype=np.float32)
        obs = spaces.Box(low=low, high=high, dtype=np.float32)
        act = spaces.Box(low=self.min_action, high=self.max_action, shape=(1,), dtype=np.float32)
        return obs, act

    def _reset_rows(self, rows: np.ndarray, u: np.ndarray, options: dict[str, Any] | None) -> None:
        low, high = self._bounds(options, -0.6, -0.4)
        start = low + (high - low) * u[:, 0]
        self._pos0[rows] = start
        self._pos[rows] = start
        self._vel[rows] = 0.0
        self._fresh[rows] = True

    def _observe(self, rows: np.ndarray | None) -> np.ndarray:
        pos, vel = (self._pos, self._vel) if rows is None else (self._pos[rows], self._vel[rows])
        out = np.empty((pos.shape[0], 2), dtype=np.float32)
        out[:, 0] = pos
        out[:, 1] = vel
        return out

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check_actions(actions, (self.num_envs, 1))
        a = actions[:, 0].astype(np.float32, copy=False)
        clipped = (a < self.min_action) | (a > self.max_action)
        fresh = np.flatnonzero(self._fresh)
        pos, vel = self._pos, self._vel
        # Float32 episode steps: every value is float32; Python constants act as float32.
        slope = 0.0025 * np.cos((_F(3) * pos).astype(np.float64))  # math.cos of the float32 product
        delta = (a * _F(self.power)) - slope.astype(np.float32)
        if clipped.any():
            delta[clipped] = (np.sign(a[clipped]).astype(np.float64) * self.power - slope[clipped]).astype(np.float32)
        vel += delta
        np.clip(vel, _F(-self.max_speed), _F(self.max_speed), out=vel)
        pos += vel
        np.clip(pos, _F(self.min_position), _F(self.max_position), out=pos)
        vel[(pos == _F(self.min_position)) & (vel < 0)] = 0.0
        terminated = (pos >= _F(self.goal_position)) & (vel >= self.goal_velocity)
        if fresh.size:
            terminated[fresh] = self._first_step(fresh, a[fresh], clipped[fresh])
        reward = np.where(terminated, 100.0, 0.0)
        a64 = a.astype(np.float64)
        reward -= (a64 * a64) * 0.1  # math.pow(a, 2) is exact for a float32 a
        return reward, terminated

    def _first_step(self, rows: np.ndarray, a: np.ndarray, clipped: np.ndarray) -> np.ndarray:
        """The first step after a reset, from the float64 state (position, 0.0); returns terminated."""
        pos = self._pos0[rows]
        slope = 0.0025 * np.cos(3 * pos)
        delta = ((a * _F(self.power)) - slope.astype(np.float32)).astype(np.float64)
        delta[clipped] = np.sign(a[clipped]).astype(np.float64) * self.power - slope[clipped]
        vel = 0.0 + delta
        np.clip(vel, -self.max_speed, self.max_speed, out=vel)
        pos = pos + vel
        np.clip(pos, self.min_position, self.max_position, out=pos)
        vel[(pos == self.min_position) & (vel < 0)] = 0.0
        terminated = (pos >= self.goal_position) & (vel >= self.goal_velocity)
        self._pos[rows] = pos
        self._vel[rows] = vel
        self._fresh[rows] = False
        return terminated
