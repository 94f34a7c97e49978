"""The deterministic tabular model of Dyna-Q: what followed each ``(s, a)`` the last time it was tried."""

from __future__ import annotations

from typing import Any

import numpy as np

#: The model's arrays, as :meth:`TabularModel.state` names them.
_ARRAYS = ("reward", "next_state", "terminated", "tried", "last_tried", "visited", "states", "actions", "num_tried")


class TabularModel:
    """``Model(s, a) = (r, s', terminated)`` as observed, plus when each pair was last tried.

    Arrays are ``[S, A]``. ``states`` lists the states an action was tried from in the order
    they were first visited, and row ``s`` of ``actions`` the actions tried in ``s`` in the
    order they were first tried (``num_tried[s]`` of them), so a seeded generator samples them
    reproducibly. When a state is first visited, each of its actions is modelled as leading
    back to it with reward 0 (the initial model of Dyna-Q+, Sutton & Barto section 8.3,
    footnote), last tried at that step; trying an action replaces that guess by what happened.
    """

    def __init__(self, num_states: int, num_actions: int) -> None:
        S, A = num_states, num_actions
        self.num_actions = A
        self.reward = np.zeros((S, A), np.float64)
        self.next_state = np.zeros((S, A), np.int64)
        self.terminated = np.zeros((S, A), bool)
        self.tried = np.zeros((S, A), bool)
        self.last_tried = np.zeros((S, A), np.int64)
        self.visited = np.zeros(S, bool)
        self.states = np.zeros(S, np.int64)
        self.actions = np.zeros((S, A), np.int64)
        self.num_tried = np.zeros(S, np.int64)
        self.num_pairs = 0
        self.num_states = 0

    def observe(self, s: int, a: int, r: float, s2: int, terminated: bool, step: int) -> None:
        """Record that ``a`` in ``s`` gave ``(r, s2, terminated)`` at real step ``step``."""
        if not self.visited[s]:
            self.visited[s] = True
            self.states[self.num_states] = s
            self.num_states += 1
            self.next_state[s] = s  # untried actions: back to s, reward 0 (already), not terminal
            self.last_tried[s] = step
        if not self.tried[s, a]:
            self.tried[s, a] = True
            self.actions[s, self.num_tried[s]] = a
            self.num_tried[s] += 1
            self.num_pairs += 1
        self.reward[s, a] = r
        self.next_state[s, a] = s2
        self.terminated[s, a] = terminated
        self.last_tried[s, a] = step

    def sample(self, rng: np.random.Generator, n: int, untried: bool = False) -> np.ndarray:
        """``n`` flat indices ``s * A + a``: each a visited state drawn uniformly, then one of its
        tried actions uniformly (Sutton & Barto, Figure 8.2, step (f)) or, with ``untried``, any of
        its actions uniformly (Dyna-Q+); empty before anything was observed.

        A state's chance does not depend on how many actions were tried in it: with two tried in
        one state and one in another, those three pairs come up 1/4, 1/4 and 1/2 of the time.
        """
        if n == 0 or self.num_pairs == 0:
            return np.zeros(0, np.int64)
        s = self.states[rng.integers(self.num_states, size=n)]
        if untried:
            return s * self.num_actions + rng.integers(self.num_actions, size=n)
        k = (rng.random(n) * self.num_tried[s]).astype(np.int64)  # uniform in 0 .. num_tried[s] - 1
        return s * self.num_actions + self.actions[s, k]

    def state(self) -> dict[str, Any]:
        """A copy of the model: arrays (checkpointed into safetensors) and counts."""
        return {**{k: getattr(self, k).copy() for k in _ARRAYS}, "num_pairs": self.num_pairs, "num_states": self.num_states}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned (the table sizes must match)."""
        for name in _ARRAYS:
            mine, theirs = getattr(self, name), np.asarray(state[name])
            if theirs.shape != mine.shape:
                raise ValueError(f"model array {name} has shape {list(theirs.shape)}, expected {list(mine.shape)}")
            mine[...] = theirs
        self.num_pairs = int(state["num_pairs"])
        self.num_states = int(state["num_states"])
