"""Resuming a run continues from its last checkpoint as the uninterrupted run would."""

import csv
import shutil

import torch

import shoal
from shoal.io.checkpoint import list_checkpoints, load_checkpoint

OVR = {"checkpoint_every": 1024, "eval_episodes": 5, "keep_checkpoints": 10}


def _rows(d):
    with open(d / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_resume_restores_state_and_finishes_like_uninterrupted(tmp_path):
    full = shoal.train("ppo", "CartPole-v1", steps=4096, seed=3, run_dir=tmp_path / "full", quiet=True, tensorboard=False, overrides=OVR)
    # Simulate a crash after the 2048-step checkpoint: drop later checkpoints and the eval.
    part = tmp_path / "part"
    shutil.copytree(full.run_dir, part)
    for j in list_checkpoints(part / "checkpoints"):
        step = int(j.stem.split("-")[-1])
        if step > 2048:
            j.unlink()
            j.with_suffix(".safetensors").unlink()
    (part / "eval.json").unlink()
    ck2048, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    assert ck2048["runner"]["env_steps"] == 2048

    resumed = shoal.train(resume=part, quiet=True, tensorboard=False)
    assert resumed.env_steps == full.env_steps == 4096
    assert (part / "eval.json").exists()
    # Counters continue: learner version = number of updates of the whole run.
    a, _ = load_checkpoint(list_checkpoints(full.run_dir / "checkpoints")[-1])
    b, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    assert a["program"]["learner"]["version"] == b["program"]["learner"]["version"] == 16
    assert a["program"]["learner"]["env_steps"] == b["program"]["learner"]["env_steps"]
    # The optimiser state carried over (Adam step counts continue, not restart).
    steps_a = [v["step"] for v in a["program"]["learner"]["optimizer"]["state"].values()]
    steps_b = [v["step"] for v in b["program"]["learner"]["optimizer"]["state"].values()]
    assert [float(x) for x in steps_a] == [float(x) for x in steps_b]
    # metrics.csv: no duplicated or missing env_steps rows, identical up to the checkpoint.
    fa, fb = _rows(full.run_dir), _rows(part)
    assert [r["env_steps"] for r in fa] == [r["env_steps"] for r in fb]
    upto = [r for r in fa if int(r["env_steps"]) <= 2048]
    assert [r["episode_return_mean"] for r in upto] == [r["episode_return_mean"] for r in fb[: len(upto)]]


def test_checkpoint_restores_exact_learner_state(tmp_path):
    r = shoal.train("ppo", "CartPole-v1", steps=1024, seed=1, run_dir=tmp_path / "r", quiet=True, tensorboard=False,
                    overrides={"eval_episodes": 0})
    tree, _ = load_checkpoint(list_checkpoints(r.run_dir / "checkpoints")[-1])
    from shoal.agents.pg.builder import ActorCriticBuilder
    from shoal.agents.pg.config import PPOConfig
    from shoal.envs import env_spec

    b = ActorCriticBuilder(PPOConfig(**{**r.config.agent.__dict__}), env_spec("CartPole-v1"), total_steps=1024)
    learner = b.make_learner(b.make_networks(), {})
    learner.load_state(tree["program"]["learner"])
    again = learner.state()
    for k, v in tree["program"]["learner"]["networks"].items():
        assert torch.equal(again["networks"][k], v)
    assert again["version"] == tree["program"]["learner"]["version"]
    assert torch.equal(again["generator"], tree["program"]["learner"]["generator"])
