"""The 1-D treasure hunt: an explorer on a line of cells walks to the treasure at the right end."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

LEFT, RIGHT = 0, 1


class Treasure1D(gym.Env):
    """``-o---T``: the explorer ``o`` starts in the leftmost cell; the treasure ``T`` is the rightmost.

    Observations are the explorer's cell (``Discrete(size)``), actions are 0 = left and
    1 = right (walking left from the first cell stays put). Reaching the treasure gives
    reward 1 and ends the episode; every other step gives ``step_reward`` (0 by default).
    Render modes: ``ansi`` returns the text line, ``human`` prints it.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(self, size: int = 6, step_reward: float = 0.0, render_mode: str | None = None) -> None:
        if size < 2:
            raise ValueError(f"Treasure1D needs at least 2 cells, got size={size}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.size = int(size)
        self.step_reward = float(step_reward)
        self.render_mode = render_mode
        self.observation_space = spaces.Discrete(self.size)
        self.action_space = spaces.Discrete(2)
        self.pos = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        self.pos = 0
        if self.render_mode == "human":
            self.render()
        return self.pos, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"Treasure1D action must be 0 (left) or 1 (right), got {action!r}")
        self.pos = min(self.pos + 1, self.size - 1) if int(action) == RIGHT else max(self.pos - 1, 0)
        found = self.pos == self.size - 1
        reward = 1.0 if found else self.step_reward
        if self.render_mode == "human":
            self.render()
        return self.pos, reward, found, False, {}

    def text(self) -> str:
        """The current line, e.g. ``-o---T`` (``o`` replaces ``T`` once the treasure is found)."""
        cells = ["-"] * (self.size - 1) + ["T"]
        cells[self.pos] = "o"
        return "".join(cells)

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self.text()
        if self.render_mode == "human":
            print(self.text())
        return None

    def grid_layout(self) -> np.ndarray:
        """The line as a 1 x size character grid (for Q-table plots)."""
        return np.array([list("S" + "." * (self.size - 2) + "T")])
