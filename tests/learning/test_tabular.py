"""Tabular methods reach the optimal greedy return through the real runner, with the shipped defaults.

Each run uses the per-env defaults from ``shoal/configs/<algo>.yaml`` (what ``shoal train
ALGO --env ID`` would use with no flags) and a fixed seed; the evaluation is the runner's
own (20 episodes, greedy policy).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import shoal
from shoal.agents.tabular.render import load_q_table

TABULAR = ["q_learning", "sarsa", "sarsa_lambda"]


def _train(algo: str, env, tmp_path: Path, seed: int = 0, **kwargs):
    return shoal.train(algo, env, seed=seed, run_dir=tmp_path / f"{algo}_s{seed}", quiet=True, tensorboard=False, **kwargs)


@pytest.mark.parametrize("algo", TABULAR)
def test_solves_treasure_hunt(algo: str, tmp_path: Path) -> None:
    run = _train(algo, "shoal/Treasure1D-v0", tmp_path)  # 3000 steps by default
    assert run.eval["mean_return"] == 1.0 and run.eval["mean_length"] == 5.0  # straight to the treasure
    q = load_q_table(run.run_dir)
    assert (q[:5].argmax(axis=1) == 1).all()  # the greedy policy moves right in every cell


@pytest.mark.parametrize("algo", TABULAR)
def test_solves_6x6_maze(algo: str, tmp_path: Path) -> None:
    run = _train(algo, "shoal/GridMaze-v0", tmp_path)  # 20000 steps by default
    assert run.eval["mean_return"] == 1.0 and run.eval["mean_length"] == 10.0  # a shortest path


def frozenlake_4x4() -> gym.Env:
    """FrozenLake 4x4, not slippery (the id's default is slippery)."""
    return gym.make("FrozenLake-v1", map_name="4x4", is_slippery=False)


def test_q_learning_frozenlake_4x4_not_slippery(tmp_path: Path) -> None:
    run = _train("q_learning", frozenlake_4x4, tmp_path, steps=5000,
                 overrides={"alpha": 0.5, "gamma": 0.95, "epsilon": 1.0, "epsilon_schedule": "linear", "epsilon_final": 0.05})
    assert run.eval["mean_return"] == 1.0 and run.eval["mean_length"] == 6.0


def test_q_learning_and_sarsa_on_cliff_walking(tmp_path: Path) -> None:
    """Q-learning's greedy path runs along the cliff (-13, optimal); Sarsa's keeps away from it (-17)
    and, exploring with epsilon = 0.1, falls less often, so its online returns are higher."""
    q_run = _train("q_learning", "CliffWalking-v1", tmp_path)  # 10000 steps, alpha 0.5, epsilon 0.1, gamma 1
    s_run = _train("sarsa", "CliffWalking-v1", tmp_path)
    assert q_run.eval["mean_return"] == -13.0
    assert s_run.eval["mean_return"] == -17.0
    online = lambda run: np.mean([row["episode_return_mean"] for row in run.history[len(run.history) // 2:]])  # noqa: E731
    assert online(s_run) > online(q_run) + 5
