"""DQN variants reach their returns through the real runner with the shipped per-env defaults.

Each run uses ``shoal/configs/dqn.yaml`` (what ``shoal train dqn --env ID`` uses with no
flags) plus the named flags; the evaluation is the runner's own (20 episodes, greedy).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import shoal

RAINBOW_LITE = {"double": True, "dueling": True, "prioritized": True, "n_step": 3}


def _train(tmp_path: Path, env: str, seed: int, steps: int | None = None, **overrides):
    run = shoal.train("dqn", env, steps=steps, seed=seed, run_dir=tmp_path / f"{env}_s{seed}", quiet=True,
                      tensorboard=False, overrides=overrides)
    print(f"dqn {env} seed {seed} {overrides}: eval {run.eval['mean_return']:.1f} after {run.env_steps} steps "
          f"in {run.wall_time_s:.1f} s")
    return run


def test_dqn_learns_cartpole_quickly(tmp_path: Path) -> None:
    run = _train(tmp_path, "CartPole-v1", seed=0, steps=30_000)
    assert run.eval["mean_return"] >= 100  # random play: about 20


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("flags", [{}, RAINBOW_LITE], ids=["defaults", "double+dueling+per+nstep"])
def test_dqn_solves_cartpole_on_seed_0(tmp_path: Path, flags: dict) -> None:
    assert _train(tmp_path, "CartPole-v1", 0, 100_000, **flags).eval["mean_return"] >= 475


@pytest.mark.extended
@pytest.mark.timeout(600)
@pytest.mark.parametrize("flags", [{}, RAINBOW_LITE], ids=["defaults", "double+dueling+per+nstep"])
def test_dqn_solves_cartpole_two_of_three_seeds(tmp_path: Path, flags: dict) -> None:
    returns = [_train(tmp_path, "CartPole-v1", seed, 100_000, **flags).eval["mean_return"] for seed in range(3)]
    assert sum(r >= 475 for r in returns) >= 2, returns


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dqn_prioritized_solves_mountain_car(tmp_path: Path) -> None:
    run = _train(tmp_path, "MountainCar-v0", seed=0, steps=200_000, prioritized=True)
    assert run.eval["mean_return"] >= -140, run.eval


@pytest.mark.extended
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", range(1, 5))
def test_dqn_solves_mountain_car_on_other_seeds(tmp_path: Path, seed: int) -> None:
    assert _train(tmp_path, "MountainCar-v0", seed, 200_000).eval["mean_return"] >= -140
