"""REINFORCE and one-step actor-critic through the real runner.

The slow tests confirm the shipped CartPole-v1 defaults (``shoal/configs/reinforce.yaml``
and ``actor_critic.yaml``): REINFORCE with a baseline reaches >= 475 within 300k steps,
one-step actor-critic >= 400. The fast ones check that both run end to end with discrete
and Gaussian actions: the right policy head, trained, with one update per episode (REINFORCE)
or per vector step (one-step actor-critic).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import shoal
from shoal.io.checkpoint import list_checkpoints, load_checkpoint


def _train(algo: str, env: str, tmp_path: Path, seed: int = 0, **kwargs):
    return shoal.train(algo, env, seed=seed, run_dir=tmp_path / f"{algo}_s{seed}", quiet=True, tensorboard=False, **kwargs)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [pytest.param(0, marks=pytest.mark.slow), pytest.param(1, marks=pytest.mark.extended)])
def test_reinforce_with_baseline_solves_cartpole(seed: int, tmp_path: Path) -> None:
    run = _train("reinforce", "CartPole-v1", tmp_path, seed)  # 200k steps, baseline, normalised returns
    assert run.config.agent.baseline and run.env_steps <= 300_000
    assert run.eval["mean_return"] >= 475, run.eval


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [pytest.param(0, marks=pytest.mark.slow), pytest.param(1, marks=pytest.mark.extended)])
def test_one_step_actor_critic_solves_cartpole(seed: int, tmp_path: Path) -> None:
    run = _train("actor_critic", "CartPole-v1", tmp_path, seed)  # 150k steps, 8 copies, one update per vector step
    assert run.eval["mean_return"] >= 400, run.eval


def _updates_due(algo: str, run, episodes: int) -> int:
    """Updates the learner must have made: one per ``episodes_per_update`` episodes (REINFORCE), one per vector step (AC)."""
    agent = run.config.agent
    return episodes // agent.episodes_per_update if algo == "reinforce" else run.env_steps // agent.num_envs


@pytest.mark.parametrize("algo, overrides", [
    ("reinforce", {"baseline": False, "normalize_returns": False}),
    ("reinforce", {"baseline": True, "episodes_per_update": 2}),
    ("actor_critic", {"discount_actor": True}),
])
def test_runs_end_to_end_on_discrete_actions(algo: str, overrides: dict, tmp_path: Path) -> None:
    run = _train(algo, "CartPole-v1", tmp_path, steps=3000, overrides={"eval_episodes": 2, **overrides})
    assert run.env_steps >= 3000 and run.eval["episodes"] == 2
    tree, _ = load_checkpoint(list_checkpoints(run.run_dir / "checkpoints")[-1])
    episodes = tree["runner"]["episodes"]
    assert episodes == run.history[-1]["episodes"] > 3000 // 500  # CartPole episodes last at most 500 steps
    nets = tree["program"]["learner"]["networks"]
    assert nets["pi.logits.weight"].shape == (2, 64)  # a categorical head over CartPole's two actions
    assert tree["program"]["learner"]["version"] == _updates_due(algo, run, episodes) > 0


@pytest.mark.parametrize("algo, overrides", [("reinforce", {}), ("actor_critic", {"num_envs": 4})])
def test_runs_on_gaussian_actions(algo: str, overrides: dict, tmp_path: Path) -> None:
    run = _train(algo, "Pendulum-v1", tmp_path, steps=1000,
                 overrides={"eval_episodes": 1, "checkpoint_every": 200, "keep_checkpoints": 10, **overrides})
    first, _ = load_checkpoint(list_checkpoints(run.run_dir / "checkpoints")[0])
    last, _ = load_checkpoint(list_checkpoints(run.run_dir / "checkpoints")[-1])
    nets0, nets = first["program"]["learner"]["networks"], last["program"]["learner"]["networks"]
    # A Gaussian head over Pendulum's one action dimension, trained by every update after the first checkpoint.
    assert nets["pi.mean.weight"].shape[0] == 1 and nets["pi.log_std"].shape == (1,)
    assert not torch.equal(nets0["pi.mean.weight"], nets["pi.mean.weight"])
    assert not torch.equal(nets0["pi.log_std"], nets["pi.log_std"])
    assert last["program"]["learner"]["version"] == _updates_due(algo, run, last["runner"]["episodes"]) > 1
    assert math.isfinite(run.history[-1]["loss_pi"])
    assert -16.3 * 200 <= run.eval["mean_return"] <= 0  # a real Pendulum episode (reward in [-16.3, 0] per step)
