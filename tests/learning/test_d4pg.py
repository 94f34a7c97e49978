"""D4PG learns Pendulum-v1 through the real runner with the shipped defaults, locally and on Ape-X over Ray.

Each run uses the per-env defaults of ``shoal/configs/d4pg.yaml`` / ``apex_d4pg.yaml`` (what
``shoal train d4pg --env Pendulum-v1`` uses) and the runner's final evaluation: 20 episodes,
deterministic actions. A random policy scores about -1200; the bar is >= -200 within 30k env steps.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import shoal


def _train(algo: str, tmp_path: Path, **kwargs):
    t0 = time.perf_counter()
    run = shoal.train(algo, "Pendulum-v1", steps=30_000, seed=0, run_dir=tmp_path / algo, quiet=True,
                      tensorboard=False, **kwargs)
    print(f"{algo} Pendulum-v1 {run.env_steps} steps: eval {run.eval['mean_return']:.1f} "
          f"in {time.perf_counter() - t0:.0f} s")
    return run


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_d4pg_local_pendulum_30k(tmp_path: Path) -> None:
    run = _train("d4pg", tmp_path)
    assert run.env_steps == 30_000 and run.eval["episodes"] == 20
    assert run.eval["mean_return"] >= -200.0, run.eval


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.ray
def test_apex_d4pg_ray_two_actors_pendulum_30k(tmp_path: Path) -> None:
    """2 actors with their own noise scales and cross-entropy priorities, one replay node, one learner."""
    run = _train("apex_d4pg", tmp_path, backend="ray", num_actors=2)
    assert run.env_steps >= 30_000 and run.eval["episodes"] == 20
    assert run.eval["mean_return"] >= -200.0, run.eval
