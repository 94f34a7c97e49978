"""Short runs through the real runner: resuming restores learner, optimiser and replay; obs normalisation is wired."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import shoal
from shoal.io.checkpoint import list_checkpoints, load_checkpoint

OVR = {"hidden": [16, 16], "batch_size": 32, "learning_starts": 100, "checkpoint_every": 200,
       "keep_checkpoints": 10, "eval_episodes": 2}


@pytest.mark.parametrize("algo", ["sac", "td3", "ddpg"])
def test_resume_finishes_like_the_uninterrupted_run(algo: str, tmp_path: Path) -> None:
    full = shoal.train(algo, "Pendulum-v1", steps=400, seed=1, run_dir=tmp_path / "full", quiet=True,
                       tensorboard=False, overrides=dict(OVR, noise="ou") if algo == "ddpg" else OVR)
    part = tmp_path / "part"
    shutil.copytree(full.run_dir, part)
    for j in list_checkpoints(part / "checkpoints"):
        if int(j.stem.split("-")[-1]) > 200:  # as if the run died after its 200-step checkpoint
            j.unlink()
            j.with_suffix(".safetensors").unlink()
    (part / "eval.json").unlink()
    resumed = shoal.train(resume=part, quiet=True, tensorboard=False)
    assert resumed.env_steps == full.env_steps == 400
    a, _ = load_checkpoint(list_checkpoints(full.run_dir / "checkpoints")[-1])
    b, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    # Counters continue where the checkpoint left them: 300 gradient steps in both runs.
    assert a["program"]["learner"]["steps"] == b["program"]["learner"]["steps"] == 300
    assert a["program"]["learner"]["critic_opt"]["t"] == b["program"]["learner"]["critic_opt"]["t"] == 300
    # The replay table came back with the checkpoint: all 400 transitions are stored at the end.
    # (Envs restart fresh episodes on resume, so the weights themselves differ from the full run's.)
    for tree in (a, b):
        table = tree["program"]["learner_node"]["tables"]["replay"]
        assert table["index"]["size"] == 400 and len(table["storage"]["fields"]["reward"]) == 400


def test_observation_normalisation_learns_statistics(tmp_path: Path) -> None:
    run = shoal.train("sac", "Pendulum-v1", steps=300, seed=0, run_dir=tmp_path / "norm", quiet=True,
                      tensorboard=False, overrides=dict(OVR, normalize_obs=True))
    tree, _ = load_checkpoint(list_checkpoints(run.run_dir / "checkpoints")[-1])
    nets = tree["program"]["learner"]["networks"]
    assert nets["obs_norm.count"].item() > 1000  # 200 batches of 32 folded in
    assert not torch.allclose(nets["obs_norm.var"], torch.ones(3))
    assert nets["obs_norm.mean"].abs().max() < 10
