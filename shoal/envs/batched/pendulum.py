"""Pendulum-v1, numpy-batched: Gymnasium 1.4's ``PendulumEnv`` dynamics for N copies at once.

Gymnasium mixes precisions here and we follow it: the state is float64, the
clipped torque ``u`` stays float32 (so ``3.0 * u`` and ``0.001 * u**2`` are float32
products), and ``x**2`` of a float64 scalar is libm's ``pow`` (``np.float_power``
reproduces it; ``x * x`` differs in the last bit now and then). The one known
difference: Gymnasium's ``u**2`` is libm's ``powf``, which numpy cannot call
vectorised; we use the correctly rounded ``u * u``, so a reward can differ by
one float32 ulp of ``0.001 * u**2`` (below 1e-9) on rare steps. Observations,
terminations and truncations are bit-identical.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from shoal.envs.batched.base import BatchedVectorEnv
from shoal.errors import EnvError


class BatchedPendulum(BatchedVectorEnv):
    """``Pendulum-v1`` (reward ``-cost``, never terminates, 200-step limit) for ``num_envs`` copies."""

    gym_id = "Pendulum-v1"
    default_max_episode_steps = 200
    draws_per_reset = 2

    max_speed = 8
    max_torque = 2.0
    dt = 0.05
    g = 10.0
    m = 1.0
    l = 1.0  # noqa: E741  (Gymnasium's name)

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(num_envs, max_episode_steps, seed, render_mode)
        self._state = np.zeros((2, self.num_envs), dtype=np.float64)  # theta, theta_dot
        # Gymnasium's coefficients, evaluated in its (Python float) order.
        self._k_gravity = 3 * self.g / (2 * self.l)
        self._k_torque = np.float32(3.0 / (self.m * self.l**2))

    def _make_spaces(self) -> tuple[spaces.Space, spaces.Space]:
        high = np.array([1.0, 1.0, self.max_speed], dtype=np.float32)
        obs = spaces.Box(low=-high, high=high, dtype=np.float32)
        act = spaces.Box(low=-self.max_torque, high=self.max_torque, shape=(1,), dtype=np.float32)
        return obs, act

    def _reset_rows(self, rows: np.ndarray, u: np.ndarray, options: dict[str, Any] | None) -> None:
        x, y = np.pi, 1.0
        if options:
            try:
                x, y = float(options.get("x_init", x)), float(options.get("y_init", y))
            except (TypeError, ValueError):
                raise EnvError(f"Pendulum reset options x_init/y_init must be numbers, got {options!r}") from None
        high = np.array([x, y])
        low = -high
        self._state[:, rows] = (low + (high - low) * u).T

    def _observe(self, rows: np.ndarray | None) -> np.ndarray:
        th, thdot = self._state if rows is None else self._state[:, rows]
        out = np.empty((th.shape[0], 3), dtype=np.float32)
        out[:, 0] = np.cos(th)
        out[:, 1] = np.sin(th)
        out[:, 2] = thdot
        return out

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check_actions(actions, (self.num_envs, 1))
        th, thdot = self._state
        u = np.clip(actions[:, 0].astype(np.float32, copy=False), -self.max_torque, self.max_torque)
        norm = np.remainder(th + np.pi, 2 * np.pi) - np.pi
        costs = np.float_power(norm, 2) + 0.1 * np.float_power(thdot, 2) + np.float32(0.001) * (u * u)
        acc = self._k_gravity * np.sin(th) + self._k_torque * u
        newthdot = np.clip(thdot + acc * self.dt, -self.max_speed, self.max_speed)
        th += newthdot * self.dt
        thdot[...] = newthdot
        return np.negative(costs, out=costs), np.zeros(self.num_envs, dtype=np.bool_)
