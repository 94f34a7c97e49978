"""REINFORCE and one-step actor-critic through the real runner.

The slow tests confirm the shipped CartPole-v1 defaults (``shoal/configs/reinforce.yaml``
and ``actor_critic.yaml``): REINFORCE with a baseline reaches >= 475 within 300k steps,
one-step actor-critic >= 400. The fast ones check that both run end to end with discrete
and Gaussian actions and leave their networks in the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import shoal
from shoal.io.checkpoint import list_checkpoints, load_checkpoint


def _train(algo: str, env: str, tmp_path: Path, seed: int = 0, **kwargs):
    return shoal.train(algo, env, seed=seed, run_dir=tmp_path / f"{algo}_s{seed}", quiet=True, tensorboard=False, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_reinforce_with_baseline_solves_cartpole(seed: int, tmp_path: Path) -> None:
    run = _train("reinforce", "CartPole-v1", tmp_path, seed)  # 200k steps, baseline, normalised returns
    assert run.config.agent.baseline and run.env_steps <= 300_000
    assert run.eval["mean_return"] >= 475, run.eval


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_one_step_actor_critic_solves_cartpole(seed: int, tmp_path: Path) -> None:
    run = _train("actor_critic", "CartPole-v1", tmp_path, seed)  # 150k steps, 8 copies, one update per vector step
    assert run.eval["mean_return"] >= 400, run.eval


@pytest.mark.parametrize("algo, overrides", [
    ("reinforce", {"baseline": False, "normalize_returns": False}),
    ("reinforce", {"baseline": True, "episodes_per_update": 2}),
    ("actor_critic", {"discount_actor": True}),
])
def test_runs_end_to_end_on_discrete_actions(algo: str, overrides: dict, tmp_path: Path) -> None:
    run = _train(algo, "CartPole-v1", tmp_path, steps=3000, overrides={"eval_episodes": 2, **overrides})
    assert run.env_steps >= 3000 and run.history[-1]["episodes"] > 0
    tree, _ = load_checkpoint(list_checkpoints(run.run_dir / "checkpoints")[-1])
    assert "pi.logits.weight" in tree["program"]["learner"]["networks"]
    assert tree["program"]["learner"]["version"] > 0


@pytest.mark.parametrize("algo, overrides", [("reinforce", {}), ("actor_critic", {"num_envs": 4})])
def test_runs_on_gaussian_actions(algo: str, overrides: dict, tmp_path: Path) -> None:
    run = _train(algo, "Pendulum-v1", tmp_path, steps=1000, overrides={"eval_episodes": 1, **overrides})
    assert run.eval is not None and run.eval["mean_length"] == 200
    assert "loss_pi" in run.history[-1]
