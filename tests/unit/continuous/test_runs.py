"""Short runs through the real runner: resuming restores learner, optimiser and replay; obs normalisation is wired."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import shoal
from shoal.io.checkpoint import list_checkpoints, load_checkpoint

OVR = {"hidden": [16, 16], "batch_size": 32, "learning_starts": 100, "checkpoint_every": 200,
       "keep_checkpoints": 10, "eval_episodes": 2}


@pytest.mark.parametrize("algo", ["sac", "td3", "ddpg", "d4pg"])
def test_resume_continues_counters_and_replay_from_the_checkpoint(algo: str, tmp_path: Path,
                                                                 crash_after_checkpoint) -> None:
    # That a resume restores every tensor (weights, optimisers, generators, replay) is
    # tests/reliability/test_resume.py::test_resume_restores_every_tensor_of_the_checkpoint; here the
    # resumed run goes on and its counters and replay must continue the checkpoint's.
    ovr = dict(OVR, noise="ou") if algo == "ddpg" else OVR
    full = shoal.train(algo, "Pendulum-v1", steps=400, seed=1, run_dir=tmp_path / "full", quiet=True,
                       tensorboard=False, overrides=ovr)
    part = tmp_path / "part"
    crash_after_checkpoint(200)  # the same run, dying right after its 200-step checkpoint
    with pytest.raises(RuntimeError, match="simulated crash"):
        shoal.train(algo, "Pendulum-v1", steps=400, seed=1, run_dir=part, quiet=True, tensorboard=False, overrides=ovr)
    ck, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])

    def opt_steps(learner: dict, name: str) -> int:  # the flat buffer is the optimiser's one parameter
        return int(learner[name]["state"][0]["step"])

    assert ck["program"]["learner"]["steps"] == opt_steps(ck["program"]["learner"], "critic_opt") == 100
    resumed = shoal.train(resume=part, quiet=True, tensorboard=False)
    assert resumed.env_steps == full.env_steps == 400
    a, _ = load_checkpoint(list_checkpoints(full.run_dir / "checkpoints")[-1])
    b, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    # Counters continue where the checkpoint left them: 300 gradient steps in both runs (200 if restarted).
    assert a["program"]["learner"]["steps"] == b["program"]["learner"]["steps"] == 300
    assert opt_steps(a["program"]["learner"], "critic_opt") == opt_steps(b["program"]["learner"], "critic_opt") == 300
    assert opt_steps(a["program"]["learner"], "policy_opt") == opt_steps(b["program"]["learner"], "policy_opt")
    assert b["program"]["learner_node"]["learner_steps"] == 300 and b["runner"]["episodes"] == a["runner"]["episodes"] == 2
    assert b["runner"]["wall_time_s"] > ck["runner"]["wall_time_s"]
    # The replay table came back with the checkpoint: its 200 transitions are still stored, unchanged,
    # ahead of the 200 the resumed run added. The envs restart fresh episodes on resume, so those 200
    # (and hence the weights trained on them) differ from the uninterrupted run's.
    fields = {name: t["program"]["learner_node"]["tables"]["replay"]["storage"]["fields"] for name, t in
              (("ck", ck), ("full", a), ("resumed", b))}
    assert len(fields["ck"]["reward"]) == 200
    assert len(fields["full"]["reward"]) == len(fields["resumed"]["reward"]) == 400
    for key in ("obs", "action", "reward", "next_obs"):
        assert np.array_equal(fields["resumed"][key][:200], fields["ck"][key])
        assert np.array_equal(fields["full"][key][:200], fields["ck"][key])
    assert not np.array_equal(fields["resumed"]["obs"][200:], fields["full"]["obs"][200:])


def test_observation_normalisation_learns_statistics(tmp_path: Path) -> None:
    run = shoal.train("sac", "Pendulum-v1", steps=300, seed=0, run_dir=tmp_path / "norm", quiet=True,
                      tensorboard=False, overrides=dict(OVR, normalize_obs=True))
    tree, _ = load_checkpoint(list_checkpoints(run.run_dir / "checkpoints")[-1])
    nets = tree["program"]["learner"]["networks"]
    assert nets["obs_norm.count"].item() > 1000  # 200 batches of 32 folded in
    assert not torch.allclose(nets["obs_norm.var"], torch.ones(3))
    assert nets["obs_norm.mean"].abs().max() < 10
