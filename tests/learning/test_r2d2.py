"""R2D2 learns the partially observed CartPole (positions only) with its shipped defaults, locally and on Ape-X.

Each run uses ``shoal/configs/r2d2.yaml`` or ``shoal/configs/apex_r2d2.yaml`` (what
``shoal train r2d2 --env shoal/CartPoleNoVel-v1`` uses with no flags); it evaluates every
10k env steps (20 greedy episodes) and stops at the first evaluation reaching 400, within
the 150k env steps the defaults give it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import shoal

ENV = "shoal/CartPoleNoVel-v1"
UNTIL_400 = {"eval_every": 10_000, "target_return": 400}


def _train(tmp_path: Path, algo: str, **kw):
    run = shoal.train(algo, ENV, seed=0, run_dir=tmp_path / algo, quiet=True, tensorboard=False,
                      overrides=UNTIL_400, **kw)
    print(f"{algo} {ENV}: eval {run.eval['mean_return']:.1f} after {run.env_steps} env steps in "
          f"{run.wall_time_s:.1f} s; evaluations {_evals(run)}")
    return run


def _evals(run) -> list[tuple[int, float]]:
    """The run's evaluations as ``(env_steps, mean return)``, from its history."""
    return [(int(r["env_steps"]), float(r["eval_return_mean"])) for r in run.history if "eval_return_mean" in r]


def _first_step_reaching(run, target: float) -> int | None:
    return next((step for step, ret in _evals(run) if ret >= target), None)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_r2d2_reaches_400_on_cartpole_without_velocities(tmp_path: Path) -> None:
    run = _train(tmp_path, "r2d2")
    first = _first_step_reaching(run, 400)
    assert first is not None and first <= 150_000 and run.eval["mean_return"] >= 400, _evals(run)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_distributed_r2d2_with_4_actors_on_ray_reaches_400(tmp_path: Path) -> None:
    run = _train(tmp_path, "apex_r2d2", backend="ray", num_actors=4)
    first = _first_step_reaching(run, 400)
    assert first is not None and first <= 150_000 and run.eval["mean_return"] >= 400, _evals(run)
