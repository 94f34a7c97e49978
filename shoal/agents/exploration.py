"""Epsilon-greedy action selection, shared by the DQN and Ape-X DQN actors and the tabular agents."""

from __future__ import annotations

from typing import Callable

import numpy as np


def epsilon_greedy(q_fn: Callable[[np.ndarray], np.ndarray], obs: np.ndarray, epsilon: float | np.ndarray,
                   num_actions: int, rng: np.random.Generator, break_ties: bool = False) -> np.ndarray:
    """Epsilon-greedy actions for a batch: uniformly random with probability ``epsilon``, else greedy.

    ``epsilon`` is one rate for the whole batch or one per row (``[B]``).

    ``q_fn`` maps the batch ``obs`` to action values ``[B, num_actions]`` (numpy).

    * ``break_ties=False`` (networks): who explores is drawn first and ``q_fn`` is not called
      when every copy explores; greedy ties go to the first action.
    * ``break_ties=True`` (tables, whose values start equal): greedy ties are broken uniformly
      at random; the values are looked up first (free for a table), then explorers overwrite
      their greedy pick.

    Each keeps the order of draws from ``rng`` its agents have always used, so seeded runs
    reproduce.
    """
    b = len(obs)
    if break_ties:
        q = np.asarray(q_fn(obs))
        actions = np.argmax(np.where(q == q.max(axis=-1, keepdims=True), rng.random(q.shape), -1.0), axis=-1)
        explore = rng.random(b) < epsilon
        if explore.any():
            actions[explore] = rng.integers(0, num_actions, size=int(explore.sum()))
        return actions
    explore = rng.random(b) < epsilon
    random_actions = rng.integers(0, num_actions, b)
    if explore.all():
        return random_actions
    return np.where(explore, random_actions, np.asarray(q_fn(obs)).argmax(-1))
