"""Test-only helpers whose process dies abruptly: importing registers ``ShoalExitingCorridor-v0``.

A copy of the corridor reset with a seed listed in ``SHOAL_TEST_EXIT_SEEDS`` (comma-separated,
read from the environment so spawned processes see it) ends its process with ``os._exit(3)``
on its 20th step, as an out-of-memory kill would: no exception, no cleanup.
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np


def square_or_exit(i: int) -> int:
    """``i * i``, except that ``i == 1`` ends the process at once with exit code 3."""
    if i == 1:
        os._exit(3)
    return i * i


def raise_for_two(i: int) -> int:
    """``i``, except that ``i == 2`` raises ValueError."""
    if i == 2:
        raise ValueError("two is refused")
    return i


class ExitingCorridor(gym.Env):
    """Walk right along 5 cells (reward 1 at the end); a doomed copy calls os._exit on its 20th step."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.pos, self.steps, self.doomed = 0, 0, False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        doomed = {int(s) for s in os.environ.get("SHOAL_TEST_EXIT_SEEDS", "").split(",") if s}
        if seed is not None:
            self.doomed = seed in doomed
        self.pos = 0
        return np.array([0.0, 1.0], np.float32), {}

    def step(self, action):
        self.steps += 1
        if self.doomed and self.steps >= 20:
            os._exit(3)
        self.pos = max(0, self.pos + (1 if int(action) == 1 else -1))
        done = self.pos >= 5
        return np.array([self.pos / 5, 1.0], np.float32), 1.0 if done else -0.01, done, False, {}


if "ShoalExitingCorridor-v0" not in gym.registry:
    gym.register(id="ShoalExitingCorridor-v0", entry_point=f"{__name__}:ExitingCorridor", max_episode_steps=50)
