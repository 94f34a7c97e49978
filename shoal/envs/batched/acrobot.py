"""Acrobot-v1, numpy-batched: Gymnasium 1.4's ``AcrobotEnv`` ("book" dynamics, one RK4 step of 0.2 s).

The RK4 step runs once for all copies. Gymnasium's arithmetic order is kept term by
term, ``x**2`` of float64 scalars is libm's ``pow`` (``np.float_power``), and the
reset state is float32 (Gymnasium casts it), so a reset observation takes cos/sin
in float32 while later ones take them in float64 and cast.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from shoal.envs.batched.base import BatchedVectorEnv

_pow = np.float_power
_PI = np.pi


class BatchedAcrobot(BatchedVectorEnv):
    """``Acrobot-v1`` (torques -1/0/+1, reward -1 until the tip swings up, 500-step limit) for ``num_envs`` copies."""

    gym_id = "Acrobot-v1"
    default_max_episode_steps = 500
    draws_per_reset = 4

    dt = 0.2
    m1 = m2 = 1.0  # link masses
    l1 = 1.0  # length of link 1
    lc1 = lc2 = 0.5  # positions of the centres of mass
    inertia = 1.0  # moment of inertia of each link
    g = 9.8
    max_vel_1 = 4 * _PI
    max_vel_2 = 9 * _PI

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(num_envs, max_episode_steps, seed, render_mode)
        self._state = np.zeros((4, self.num_envs), dtype=np.float64)  # theta1, theta2, dtheta1, dtheta2
        self._fresh = np.zeros(self.num_envs, dtype=np.bool_)  # state is still the float32 reset state
        self._torques = np.array([-1.0, 0.0, 1.0])
        self._k = np.empty((4, 4, self.num_envs), dtype=np.float64)  # the four RK4 slopes
        m1, m2, l1, lc1, lc2, i1, i2, g = self.m1, self.m2, self.l1, self.lc1, self.lc2, self.inertia, self.inertia, self.g
        # Constant sub-products of Gymnasium's expressions, grouped as Python evaluates them.
        self._d1_a = m1 * lc1**2
        self._d1_b = l1**2 + lc2**2
        self._d1_c = 2 * l1 * lc2
        self._d2_a = lc2**2
        self._d2_b = l1 * lc2
        self._phi2_k = m2 * lc2 * g
        self._phi1_a = -m2 * l1 * lc2
        self._phi1_b = 2 * m2 * l1 * lc2
        self._phi1_c = (m1 * lc1 + m2 * l1) * g
        self._dd2_k = m2 * l1 * lc2
        self._dd2_den = m2 * lc2**2 + i2
        self._i1, self._i2, self._m2 = i1, i2, m2

    def _make_spaces(self) -> tuple[spaces.Space, spaces.Space]:
        high = np.array([1.0, 1.0, 1.0, 1.0, self.max_vel_1, self.max_vel_2], dtype=np.float32)
        return spaces.Box(low=-high, high=high, dtype=np.float32), spaces.Discrete(3)

    def _reset_rows(self, rows: np.ndarray, u: np.ndarray, options: dict[str, Any] | None) -> None:
        low, high = self._bounds(options, -0.1, 0.1)
        self._state[:, rows] = (low + (high - low) * u).astype(np.float32).T
        self._fresh[rows] = True

    def _observe(self, rows: np.ndarray | None) -> np.ndarray:
        s = self._state if rows is None else self._state[:, rows]
        fresh = self._fresh if rows is None else self._fresh[rows]
        out = self._obs_of(s)
        if fresh.any():
            out[fresh] = self._obs_of(s[:, fresh].astype(np.float32))
        return out

    @staticmethod
    def _obs_of(s: np.ndarray) -> np.ndarray:
        """Observations [cos t1, sin t1, cos t2, sin t2, dt1, dt2] of states s [4, n], trig in s's dtype."""
        out = np.empty((s.shape[1], 6), dtype=np.float32)
        out[:, 0] = np.cos(s[0])
        out[:, 1] = np.sin(s[0])
        out[:, 2] = np.cos(s[1])
        out[:, 3] = np.sin(s[1])
        out[:, 4] = s[2]
        out[:, 5] = s[3]
        return out

    def _derivs(self, s: np.ndarray, a: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Time derivatives of s = (theta1, theta2, dtheta1, dtheta2) [4, N] under torque ``a``, into ``out``.

        The "book" equations, each product and sum grouped exactly as Gymnasium's ``_dsdt``.
        """
        theta1, theta2, dtheta1, dtheta2 = s
        cos2 = np.cos(theta2)
        sin2 = np.sin(theta2)
        d1 = self._d1_a + self._m2 * (self._d1_b + self._d1_c * cos2) + self._i1 + self._i2
        d2 = self._m2 * (self._d2_a + self._d2_b * cos2) + self._i2
        phi2 = self._phi2_k * np.cos(theta1 + theta2 - _PI / 2.0)
        phi1 = (
            self._phi1_a * _pow(dtheta2, 2) * sin2
            - self._phi1_b * dtheta2 * dtheta1 * sin2
            + self._phi1_c * np.cos(theta1 - _PI / 2)
            + phi2
        )
        num = a + d2 / d1 * phi1 - self._dd2_k * _pow(dtheta1, 2) * sin2 - phi2
        ddtheta2 = np.divide(num, self._dd2_den - _pow(d2, 2) / d1, out=out[3])
        np.negative(d2 * ddtheta2 + phi1, out=out[2])
        out[2] /= d1
        out[:2] = s[2:]
        return out

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check_actions(actions, (self.num_envs,), integer=True)
        torque = self._torques[actions]
        y0 = self._state
        k1, k2, k3, k4 = self._k
        dt = self.dt - 0  # Gymnasium integrates over t = [0, dt]
        half = dt / 2.0
        self._derivs(y0, torque, k1)
        self._derivs(y0 + half * k1, torque, k2)
        self._derivs(y0 + half * k2, torque, k3)
        self._derivs(y0 + dt * k3, torque, k4)
        k2 *= 2
        k3 *= 2
        k1 += k2
        k1 += k3
        k1 += k4
        k1 *= dt / 6.0
        y0 += k1
        theta1, theta2 = _wrap(y0[0]), _wrap(y0[1])
        np.clip(y0[2], -self.max_vel_1, self.max_vel_1, out=y0[2])
        np.clip(y0[3], -self.max_vel_2, self.max_vel_2, out=y0[3])
        self._fresh[:] = False
        terminated = -np.cos(theta1) - np.cos(theta2 + theta1) > 1.0
        return np.where(terminated, 0.0, -1.0), terminated


def _wrap(x: np.ndarray) -> np.ndarray:
    """Shift angles into [-pi, pi] by whole turns, one turn at a time as Gymnasium's ``wrap`` does."""
    turn = _PI - -_PI
    while True:
        high = x > _PI
        if not high.any():
            break
        x[high] -= turn
    while True:
        low = x < -_PI
        if not low.any():
            break
        x[low] += turn
    return x
