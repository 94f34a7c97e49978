"""DDPG, TD3, SAC (and Ape-X DPG) learn Pendulum-v1 through the real runner with the shipped defaults.

Each run uses the per-env defaults of ``shoal/configs/<algo>.yaml`` (what ``shoal train ALGO
--env Pendulum-v1 --steps N`` uses) and the runner's own final evaluation: 20 episodes,
deterministic actions. A random policy scores about -1200 on Pendulum. The slow set runs
seed 0 of each (>= -200: SAC 20k steps, TD3 and DDPG 30k; Ape-X DPG on Ray >= -250); the
``extended`` set (``-m extended``) asks for >= -200 in two of seeds 0, 1, 2.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import shoal
from shoal.io.checkpoint import list_checkpoints, load_checkpoint


def _train(algo: str, tmp_path: Path, seed: int, steps: int, **kwargs):
    return shoal.train(algo, "Pendulum-v1", steps=steps, seed=seed, run_dir=tmp_path / f"{algo}_s{seed}",
                       quiet=True, tensorboard=False, **kwargs)


def _two_of_three(algo: str, tmp_path: Path, steps: int, threshold: float, **kwargs) -> None:
    results = [_train(algo, tmp_path, seed, steps, **kwargs).eval["mean_return"] for seed in (0, 1, 2)]
    print(f"{algo} Pendulum-v1 {steps} steps, eval per seed: {[round(r, 1) for r in results]}")
    assert sum(r >= threshold for r in results) >= 2, results


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("algo,steps", [("sac", 20_000), ("td3", 30_000), ("ddpg", 30_000)])
def test_seed_0_reaches_minus_200_on_pendulum(tmp_path: Path, algo: str, steps: int) -> None:
    result = _train(algo, tmp_path, 0, steps).eval["mean_return"]
    print(f"{algo} Pendulum-v1 {steps} steps, seed 0: eval {result:.1f}")
    assert result >= -200.0, result


@pytest.mark.extended
@pytest.mark.timeout(600)
def test_sac_pendulum_20k_two_of_three_seeds(tmp_path: Path) -> None:
    _two_of_three("sac", tmp_path, 20_000, -200.0)


@pytest.mark.extended
@pytest.mark.timeout(600)
def test_td3_pendulum_30k_two_of_three_seeds(tmp_path: Path) -> None:
    _two_of_three("td3", tmp_path, 30_000, -200.0)


@pytest.mark.extended
@pytest.mark.timeout(600)
def test_ddpg_pendulum_30k_two_of_three_seeds(tmp_path: Path) -> None:
    _two_of_three("ddpg", tmp_path, 30_000, -200.0)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.ray
def test_apex_ddpg_ray_two_actors_pendulum(tmp_path: Path) -> None:
    """Ape-X DPG on Ray: 2 actors with their own noise scales and priorities, one replay node, one learner."""
    run = _train("apex_ddpg", tmp_path, seed=0, steps=30_000, backend="ray", num_actors=2)
    print(f"apex_ddpg ray x2 Pendulum-v1 30000 steps: eval {run.eval['mean_return']:.1f}")
    assert run.eval["mean_return"] >= -250.0, run.eval


def test_apex_ddpg_runs_in_process(tmp_path: Path) -> None:
    """The Ape-X wiring on the in-process backend: a short run trains and evaluates."""
    run = _train("apex_ddpg", tmp_path, seed=0, steps=1500, num_actors=2,
                 overrides={"learning_starts": 500, "eval_episodes": 2})
    assert run.env_steps >= 1500 and run.eval["episodes"] == 2 and math.isfinite(run.eval["mean_return"])
    tree, _ = load_checkpoint(list_checkpoints(run.run_dir / "checkpoints")[-1])
    prog = tree["program"]
    assert prog["learner_steps"] == prog["learner"]["steps"] > 0  # the learner trained on sampled replay
    actors = [a["actor"] for a in prog["actors"]]
    assert len(actors) == 2 and sum(a["steps"] for a in actors) == run.env_steps and all(a["steps"] > 0 for a in actors)
    assert all(a["version"] > 0 for a in actors)  # both acted with parameters the learner sent them
    limiter = prog["replay"]["table"]["rate_limiter"]  # the replay node's counts, kept with its table
    assert limiter["inserts"] > 0 and limiter["samples"] > 0
