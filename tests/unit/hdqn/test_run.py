"""h-DQN through the runner: checkpoint round trip, resume, greedy evaluation, `shoal eval`, and the refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shoal
from shoal.agents.hdqn.builder import HDQNBuilder
from shoal.agents.hdqn.config import HDQNConfig
from shoal.envs.make import env_spec
from shoal.errors import ConfigError, EnvError
from shoal.io.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from shoal.run.reload import evaluate_run

ENV = "shoal/StochasticDecision-v0"
OVR = {"learning_starts": 200, "train_freq": 16, "gradient_steps": 2, "batch_size": 16, "buffer_size": 5000,
       "checkpoint_every": 512, "keep_checkpoints": 10, "eval_episodes": 50}
STEPS = 1024


def _train(run_dir: Path, steps: int = STEPS, **over):
    return shoal.train("hdqn", ENV, steps=steps, seed=4, run_dir=run_dir, quiet=True, tensorboard=False,
                       overrides={**OVR, **over})


def test_learner_and_actor_state_round_trip_through_a_checkpoint_file(tmp_path: Path, tree_differences) -> None:
    builder = HDQNBuilder(HDQNConfig(**{k: v for k, v in OVR.items() if k in HDQNConfig.__dataclass_fields__}),
                          env_spec(ENV), total_steps=2000, seed=2)
    from shoal.envs import make_vec_env

    nets = builder.make_networks()
    learner = builder.make_learner(nets, {})
    actor = builder.make_actor(nets, 2, seed=5)
    env = make_vec_env(ENV, 2, seed=1)
    actor.observe_first(env.obs)
    for _ in range(20):  # 20 hand-overs of 16 vector steps: both levels take updates
        for _ in range(16):
            a = actor.select_action(env.obs)
            actor.observe(a, env.step(a))
        learner.step([actor.drain()])
    assert learner.levels["meta"].steps > 0 and learner.levels["controller"].steps > 0
    state = {"learner": learner.state(), "actor": actor.state()}
    save_checkpoint(tmp_path / "ck", state, {"env_steps": 640})
    loaded, meta = load_checkpoint(tmp_path / "ck.json")
    assert meta["env_steps"] == 640

    nets2 = builder.make_networks()
    learner2, actor2 = builder.make_learner(nets2, {}), builder.make_actor(nets2, 2, seed=99)
    learner2.load_state(loaded["learner"])
    actor2.load_state(loaded["actor"])
    assert tree_differences(learner2.state(), learner.state()) == []
    assert tree_differences(actor2.state(), actor.state()) == []
    assert len(learner2.tables["meta"]) == len(learner.tables["meta"]) > 0
    assert len(learner2.tables["controller"]) == 640
    np.testing.assert_array_equal(actor2.controller_epsilons(), actor.controller_epsilons())
    # The restored learner continues exactly as the original: the same next update on both levels.
    for lrn in (learner, learner2):
        lrn.env_steps += 64
    m1, m2 = learner.step([]), learner2.step([])
    assert m1 == m2 and m1["controller_loss"] > 0
    assert tree_differences(learner2.state(), learner.state()) == []


def test_runs_resumes_and_evaluates_greedily(tmp_path: Path, crash_after_checkpoint) -> None:
    full = _train(tmp_path / "full")
    assert full.env_steps == STEPS
    assert {"meta_loss", "controller_loss", "goal_success_frac"} <= {k for r in full.history for k in r}
    assert full.eval["episodes"] == 50 and 0.0 < full.eval["mean_return"] <= 1.0
    # Extrinsic returns: every episode of this env pays 0.01 or 1 (or 0 when cut at 100 steps).
    assert set(np.round(full.eval["returns"], 6)) <= {0.0, 0.01, 1.0}

    part = tmp_path / "part"
    crash_after_checkpoint(512)  # checkpoints fall at iteration ends: 16 env steps each
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(part)
    mid, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    lm = mid["program"]["learner"]
    assert lm["env_steps"] == 512 and lm["tables"]["controller"]["index"]["size"] == 512  # one item per env step
    resumed = shoal.train(resume=part, quiet=True, tensorboard=False)
    assert resumed.env_steps == STEPS
    a, _ = load_checkpoint(list_checkpoints(full.run_dir / "checkpoints")[-1])
    b, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    la, lb = a["program"]["learner"], b["program"]["learner"]
    # The update schedules carried on from the checkpoint: the same number of updates per level as one run.
    assert la["slots"] == lb["slots"] and la["env_steps"] == lb["env_steps"] == STEPS
    assert [la["levels"][k]["steps"] for k in ("meta", "controller")] == [lb["levels"][k]["steps"] for k in ("meta", "controller")]
    # The replay kept its pre-crash items: the controller table holds every transition of the run.
    assert lb["tables"]["controller"]["index"]["size"] == STEPS
    # The goal statistics and the meta-controller's schedule continued too: the resumed actor's counts are the
    # uninterrupted run's (its env steps drive the meta epsilon, its attempts the controller's epsilons).
    before = mid["program"]["actors"][0]["actor"]["success"]["attempts"]
    after = b["program"]["actors"][0]["actor"]["success"]["attempts"]
    assert (after >= before).all() and after.sum() > before.sum()
    assert mid["program"]["actors"][0]["actor"]["env_steps"] == 512
    assert b["program"]["actors"][0]["actor"]["env_steps"] == a["program"]["actors"][0]["actor"]["env_steps"] == STEPS

    again = evaluate_run(part, episodes=50)  # `shoal eval DIR`: the greedy policy of the last checkpoint
    assert again["episodes"] == 50 and set(np.round(again["returns"], 6)) <= {0.0, 0.01, 1.0}
    with pytest.raises(ConfigError, match="success_window cannot change"):  # it shapes the checkpointed statistics
        shoal.train(resume=part, steps=2 * STEPS, quiet=True, tensorboard=False, overrides={"success_window": 50})


def test_cli_trains_hdqn(tmp_path: Path) -> None:
    from shoal.cli import main

    rc = main(["train", "hdqn", "--env", ENV, "--steps", "400", "--run-dir", str(tmp_path / "cli"), "--quiet",
               "learning_starts=100", "eval_episodes=5"])
    assert rc == 0 and (tmp_path / "cli" / "eval.json").exists()


def test_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(EnvError, match="goal_fn"):
        HDQNBuilder(HDQNConfig(), env_spec("CartPole-v1"))
    with pytest.raises(ConfigError, match="num_goals"):
        HDQNConfig(goal_fn="mod:fn")
    with pytest.raises(ConfigError, match="n_step"):
        HDQNConfig(n_step=3)
    with pytest.raises(ConfigError, match="observations"):
        HDQNBuilder(HDQNConfig(num_goals=4), env_spec(ENV))
    with pytest.raises(ConfigError, match="local"):
        shoal.train("hdqn", ENV, steps=100, run_dir=tmp_path / "apex", quiet=True, tensorboard=False,
                    overrides={"topology": "impala"})
