"""A test-only env that crashes mid-run for chosen seeds: importing it registers ``ShoalCrashingCorridor-v0``.

The seeds come from the ``SHOAL_TEST_CRASH_SEEDS`` environment variable (comma-separated), so
child processes of a test see the same choice. A copy reset with one of them raises on its
20th step; every other copy is an ordinary corridor.
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np


class CrashingCorridor(gym.Env):
    """Walk right along 5 cells (reward 1 at the end); raises RuntimeError for a crash seed."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.pos, self.steps, self.doomed = 0, 0, False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        crash = {int(s) for s in os.environ.get("SHOAL_TEST_CRASH_SEEDS", "").split(",") if s}
        if seed is not None:
            self.doomed = seed in crash
        self.pos = 0
        return np.array([0.0, 1.0], np.float32), {}

    def step(self, action):
        self.steps += 1
        if self.doomed and self.steps >= 20:
            raise RuntimeError("simulated env crash")
        self.pos = max(0, self.pos + (1 if int(action) == 1 else -1))
        done = self.pos >= 5
        return np.array([self.pos / 5, 1.0], np.float32), 1.0 if done else -0.01, done, False, {}


if "ShoalCrashingCorridor-v0" not in gym.registry:
    gym.register(id="ShoalCrashingCorridor-v0", entry_point=f"{__name__}:CrashingCorridor", max_episode_steps=50)
