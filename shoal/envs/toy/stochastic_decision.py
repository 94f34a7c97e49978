"""The six-state stochastic decision process of h-DQN (Kulkarni et al. 2016, section 4.1).

States ``0..5`` are the paper's ``s1..s6``. An episode starts in state 1 (``s2``). Action 0
("left") always moves one state left; action 1 ("right") moves one state right with
probability ``p_right`` (0.5) and one state left otherwise; "right" in the last state stays
there. Reaching state 0 ends the episode with reward 1 if the last state was visited in the
episode and 1/100 otherwise; every other step pays 0. Going right pays only for a walk that
reaches the far end before drifting back, so an agent that does not remember whether it has
been there, or that explores with single steps, settles for 0.01.

The registered id ``shoal/StochasticDecision-v0`` ends episodes at 100 steps (truncation).
:func:`one_hot_stochastic_decision` makes the same env with one-hot ``Box`` observations, and
:func:`one_hot_state_reached` is the goal function of h-DQN for it (see ``docs/hdqn.md``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

LEFT, RIGHT = 0, 1


class StochasticDecision(gym.Env):
    """The paper's chain: start at state 1, reward 1 at state 0 after visiting the last state, else 0.01.

    ``info["visited_last"]`` says whether the last state was visited in this episode so far.
    Render modes: ``ansi`` returns the text line (``0-o---`` style), ``human`` prints it.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(self, num_states: int = 6, p_right: float = 0.5, render_mode: str | None = None) -> None:
        if num_states < 3:
            raise ValueError(f"StochasticDecision needs at least 3 states, got num_states={num_states}")
        if not 0.0 <= p_right <= 1.0:
            raise ValueError(f"p_right is a probability in [0, 1], got {p_right}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.num_states = int(num_states)
        self.p_right = float(p_right)
        self.render_mode = render_mode
        self.observation_space = spaces.Discrete(self.num_states)
        self.action_space = spaces.Discrete(2)
        self.state = 1
        self.visited_last = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        self.state = 1
        self.visited_last = False
        if self.render_mode == "human":
            self.render()
        return self.state, {"visited_last": False}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"StochasticDecision action must be 0 (left) or 1 (right), got {action!r}")
        last = self.num_states - 1
        if int(action) == RIGHT and self.np_random.random() < self.p_right:
            self.state = min(self.state + 1, last)
        else:
            self.state -= 1
        self.visited_last = self.visited_last or self.state == last
        terminated = self.state == 0
        reward = (1.0 if self.visited_last else 0.01) if terminated else 0.0
        if self.render_mode == "human":
            self.render()
        return self.state, reward, terminated, False, {"visited_last": self.visited_last}

    def text(self) -> str:
        """The current chain, e.g. ``-o----`` (``*`` marks the last state once visited)."""
        cells = ["-"] * self.num_states
        if self.visited_last:
            cells[-1] = "*"
        cells[self.state] = "o"
        return "".join(cells)

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self.text()
        if self.render_mode == "human":
            print(self.text())
        return None


def one_hot_stochastic_decision(**kwargs: Any) -> gym.Env:
    """``shoal/StochasticDecision-v0`` (keyword arguments passed on) with one-hot observations ``Box(0, 1, (n,))``."""
    return gym.wrappers.FlattenObservation(gym.make("shoal/StochasticDecision-v0", **kwargs))


def one_hot_state_reached(obs: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """An h-DQN goal function for one-hot states: goal ``g`` is reached where the state is ``g``.

    ``obs`` is ``[B, n]``, ``goals`` is ``[B]`` (integers); returns ``[B]`` booleans.
    """
    return np.asarray(obs).reshape(len(goals), -1).argmax(-1) == np.asarray(goals)
