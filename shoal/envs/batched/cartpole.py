"""CartPole-v1, numpy-batched: Gymnasium 1.4's ``CartPoleEnv`` dynamics for N copies at once.

The state is float64 (as in Gymnasium), stored [4, N] so each component is a
contiguous row; every arithmetic step keeps Gymnasium's operation order so the
float64 results, and hence the float32 observations, are bit-identical.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from shoal.envs.batched.base import BatchedVectorEnv


class BatchedCartPole(BatchedVectorEnv):
    """``CartPole-v1`` (Euler integration, reward 1 per step, 500-step limit) for ``num_envs`` copies."""

    gym_id = "CartPole-v1"
    default_max_episode_steps = 500
    draws_per_reset = 4

    # Physical constants, derived exactly as Gymnasium derives them.
    gravity = 9.8
    masscart = 1.0
    masspole = 0.1
    total_mass = masspole + masscart
    length = 0.5  # half the pole's length
    polemass_length = masspole * length
    force_mag = 10.0
    tau = 0.02
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(num_envs, max_episode_steps, seed, render_mode)
        n = self.num_envs
        self._state = np.zeros((4, n), dtype=np.float64)
        self._tmp = np.empty((5, n), dtype=np.float64)  # scratch rows for the hot path
        self._ones = np.ones(n, dtype=np.float64)

    def _make_spaces(self) -> tuple[spaces.Space, spaces.Space]:
        high = np.array(
            [self.x_threshold * 2, np.inf, self.theta_threshold_radians * 2, np.inf], dtype=np.float32
        )
        return spaces.Box(-high, high, dtype=np.float32), spaces.Discrete(2)

    def _reset_rows(self, rows: np.ndarray, u: np.ndarray, options: dict[str, Any] | None) -> None:
        low, high = self._bounds(options, -0.05, 0.05)
        self._state[:, rows] = (low + (high - low) * u).T

    def _observe(self, rows: np.ndarray | None) -> np.ndarray:
        src = self._state if rows is None else self._state[:, rows]
        out = np.empty((src.shape[1], 4), dtype=np.float32)
        out[...] = src.T
        return out

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check_actions(actions, (self.num_envs,), integer=True)
        x, x_dot, theta, theta_dot = self._state
        cos, sin, temp, acc, tmp = self._tmp
        force = np.where(actions == 1, self.force_mag, -self.force_mag)  # as Gymnasium: 1 right, else left
        np.cos(theta, out=cos)
        np.sin(theta, out=sin)
        # temp = (force + polemass_length * theta_dot**2 * sin) / total_mass
        np.square(theta_dot, out=temp)
        temp *= self.polemass_length
        temp *= sin
        temp += force
        temp /= self.total_mass
        # thetaacc = (g * sin - cos * temp) / (length * (4/3 - masspole * cos**2 / total_mass))
        np.multiply(sin, self.gravity, out=acc)
        np.multiply(cos, temp, out=tmp)
        acc -= tmp
        np.square(cos, out=tmp)
        tmp *= self.masspole
        tmp /= self.total_mass
        np.subtract(4.0 / 3.0, tmp, out=tmp)
        tmp *= self.length
        acc /= tmp  # acc is now thetaacc
        # xacc = temp - polemass_length * thetaacc * cos / total_mass   (into temp)
        np.multiply(acc, self.polemass_length, out=tmp)
        tmp *= cos
        tmp /= self.total_mass
        temp -= tmp
        # Euler: positions move with the old velocities.
        np.multiply(x_dot, self.tau, out=tmp)
        x += tmp
        np.multiply(temp, self.tau, out=tmp)
        x_dot += tmp
        np.multiply(theta_dot, self.tau, out=tmp)
        theta += tmp
        acc *= self.tau
        theta_dot += acc
        terminated = np.abs(x, out=tmp) > self.x_threshold
        terminated |= np.abs(theta, out=tmp) > self.theta_threshold_radians
        return self._ones.copy(), terminated


class BatchedCartPoleNoVel(BatchedCartPole):
    """``shoal/CartPoleNoVel-v1`` batched: CartPole-v1's dynamics, observing only ``[x, theta]``."""

    gym_id = "shoal/CartPoleNoVel-v1"

    def _make_spaces(self) -> tuple[spaces.Space, spaces.Space]:
        from shoal.envs.partial import novel_space

        full, act = super()._make_spaces()
        assert isinstance(full, spaces.Box)
        return novel_space(full), act

    def _observe(self, rows: np.ndarray | None) -> np.ndarray:
        src = self._state if rows is None else self._state[:, rows]
        out = np.empty((src.shape[1], 2), dtype=np.float32)
        out[:, 0] = src[0]
        out[:, 1] = src[2]
        return out
