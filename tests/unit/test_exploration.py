"""The shared epsilon-greedy: exploration rate, greedy picks, tie breaking, the skipped network."""

from __future__ import annotations

import numpy as np
import pytest

from shoal.agents.exploration import epsilon_greedy

Q = np.array([[0.0, 0.0, 0.0], [0.0, 5.0, 0.0]])


def _table(obs: np.ndarray) -> np.ndarray:
    return Q[obs]


@pytest.mark.parametrize("break_ties", [False, True])
def test_explores_at_the_rate_asked_and_is_greedy_otherwise(break_ties: bool) -> None:
    rng = np.random.default_rng(0)
    assert (epsilon_greedy(_table, np.ones(100, np.int64), 0.0, 3, rng, break_ties) == 1).all()
    explored = epsilon_greedy(_table, np.ones(6000, np.int64), 0.3, 3, rng, break_ties)
    assert (explored != 1).mean() == pytest.approx(0.2, abs=0.02)  # 0.3 * 2/3 of random picks are not greedy


def test_ties_go_to_the_first_action_or_uniformly_at_random() -> None:
    rng = np.random.default_rng(0)
    assert (epsilon_greedy(_table, np.zeros(100, np.int64), 0.0, 3, rng) == 0).all()
    picks = epsilon_greedy(_table, np.zeros(3000, np.int64), 0.0, 3, rng, break_ties=True)
    assert (np.bincount(picks, minlength=3) > 800).all()


def test_the_network_is_skipped_when_every_copy_explores() -> None:
    def fail(obs: np.ndarray) -> np.ndarray:
        raise AssertionError("q_fn called")

    actions = epsilon_greedy(fail, np.zeros(50, np.int64), 1.0, 3, np.random.default_rng(0))
    assert actions.shape == (50,) and set(actions.tolist()) <= {0, 1, 2}
