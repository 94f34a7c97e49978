"""A test-only env package in Gymnasium's style: importing it registers ``ShoalCorridor-v0``.

Tests reach it as ``--env shoal_custom_envs:ShoalCorridor-v0`` with this folder on PYTHONPATH
(subprocesses), on ``sys.path`` only (then Ray workers get it shipped by shoal), or as the
current folder of the ``shoal`` command.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    """Walk right along a corridor of ``length`` cells; reward 1 at the end, -0.01 a step."""

    def __init__(self, length: int = 5) -> None:
        self.length = length
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.pos = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.pos / self.length, 1.0], np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos = 0
        return self._obs(), {}

    def step(self, action):
        self.pos = max(0, self.pos + (1 if int(action) == 1 else -1))
        done = self.pos >= self.length
        return self._obs(), 1.0 if done else -0.01, done, False, {}


if "ShoalCorridor-v0" not in gym.registry:
    gym.register(id="ShoalCorridor-v0", entry_point=f"{__name__}:Corridor", max_episode_steps=50)
