"""Resuming a run restores every piece of its state and continues its counters from the checkpoint."""

import csv
import re

import pytest

import shoal
import shoal.run.runner as runner
from shoal.io.checkpoint import list_checkpoints, load_checkpoint

OVR = {"checkpoint_every": 1024, "eval_episodes": 5, "keep_checkpoints": 10}
_SMALL_OFF_POLICY = {"hidden": [16, 16], "batch_size": 32, "learning_starts": 100}
# (algo, env, steps, overrides, optimiser keys of the learner state): one short run of every
# algorithm family through the real runner.
RUNS = [
    ("ppo", "CartPole-v1", 1024, {}, {"optimizer"}),
    ("a2c", "CartPole-v1", 640, {}, {"optimizer"}),
    ("reinforce", "CartPole-v1", 600, {"baseline": True}, {"optimizer"}),
    ("actor_critic", "CartPole-v1", 800, {}, {"optimizer"}),
    ("dqn", "CartPole-v1", 800, {"learning_starts": 200, "prioritized": True}, {"optimizer"}),
    ("sac", "Pendulum-v1", 300, dict(_SMALL_OFF_POLICY, normalize_obs=True), {"policy_opt", "critic_opt", "alpha_opt"}),
    ("td3", "Pendulum-v1", 300, _SMALL_OFF_POLICY, {"policy_opt", "critic_opt"}),
    ("ddpg", "Pendulum-v1", 300, dict(_SMALL_OFF_POLICY, noise="ou"), {"policy_opt", "critic_opt"}),
    ("apex_dqn", "CartPole-v1", 1200, {"num_actors": 2, "num_envs": 2, "learning_starts": 200, "batch_size": 32,
                                       "hidden": [16, 16]}, {"optimizer"}),
    ("apex_ddpg", "Pendulum-v1", 600, dict(_SMALL_OFF_POLICY, num_actors=2), {"policy_opt", "critic_opt"}),
    ("q_learning", "shoal/Treasure1D-v0", 400, {}, set()),  # the Q-table is its only parameter
    ("sarsa_lambda", "shoal/Treasure1D-v0", 400, {}, set()),
]
# What a resume resets on purpose: off-policy actors drop their parameter version so they take the
# next parameters offered, and the envs restart fresh episodes, which restarts the OU noise at 0.
_RESET_ON_LOAD = re.compile(r"/program/actors/\d+/actor/(version|noise/x)$")


def _has_stepped(opt):
    """Whether a saved optimiser state shows gradient steps (a parameter's step count above 0)."""
    return any(float(s["step"]) > 0 for s in opt["state"].values())


def _rows(d):
    with open(d / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("algo, env, steps, overrides, optimisers", RUNS, ids=[r[0] for r in RUNS])
def test_resume_restores_every_tensor_of_the_checkpoint(algo, env, steps, overrides, optimisers, tmp_path,
                                                        tree_differences):
    """Save, load into a freshly built program, save again: the two states are identical."""
    d = tmp_path / algo
    shoal.train(algo, env, steps=steps, seed=2, run_dir=d, quiet=True, tensorboard=False,
                overrides={"eval_episodes": 1, **overrides})
    before, _ = load_checkpoint(list_checkpoints(d / "checkpoints")[-1])
    # Nothing is left to train: the resumed run loads the checkpoint and saves its state straight back.
    resumed = shoal.train(resume=d, quiet=True, tensorboard=False)
    after, _ = load_checkpoint(list_checkpoints(d / "checkpoints")[-1])
    assert resumed.env_steps == before["runner"]["env_steps"] == after["runner"]["env_steps"] >= steps
    assert after["runner"]["wall_time_s"] >= before["runner"]["wall_time_s"]
    diffs = [p for p in tree_differences(before, after)
             if p.split(" ")[0] != "/runner/wall_time_s" and not _RESET_ON_LOAD.search(p.split(" ")[0])]
    assert diffs == []
    learner = after["program"]["learner"]  # the state compared holds the parameters and every optimiser
    assert learner["networks"] and optimisers <= set(learner), sorted(learner)
    assert all(_has_stepped(learner[k]) for k in optimisers)  # so their state is not just the initial one


def test_resume_continues_every_counter_from_the_checkpoint(tmp_path, monkeypatch):
    kw = dict(steps=4096, seed=3, quiet=True, tensorboard=False, overrides=OVR)
    full = shoal.train("ppo", "CartPole-v1", run_dir=tmp_path / "full", **kw)
    # The same run dies between checkpoints: at 2560 steps, two metric rows after its 2048-step checkpoint.
    real_log = runner.MetricsLogger.log

    def log_then_crash(self, row):
        real_log(self, row)
        if row["env_steps"] == 2560:
            raise RuntimeError("simulated crash at 2560 env steps")

    monkeypatch.setattr(runner.MetricsLogger, "log", log_then_crash)
    part = tmp_path / "part"
    with pytest.raises(RuntimeError, match="simulated crash"):
        shoal.train("ppo", "CartPole-v1", run_dir=part, **kw)
    monkeypatch.undo()
    assert not (part / "eval.json").exists() and max(int(r["env_steps"]) for r in _rows(part)) == 2560
    ck, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    assert ck["runner"]["env_steps"] == 2048 and ck["program"]["learner"]["version"] == 8

    resumed = shoal.train(resume=part, quiet=True, tensorboard=False)
    assert resumed.env_steps == full.env_steps == 4096
    assert (part / "eval.json").exists()
    a, _ = load_checkpoint(list_checkpoints(full.run_dir / "checkpoints")[-1])
    b, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    la, lb = a["program"]["learner"], b["program"]["learner"]
    # Learner counters: 16 updates of 256 steps in the whole run, as if never interrupted (8 if restarted).
    assert la["version"] == lb["version"] == 16
    assert la["env_steps"] == lb["env_steps"] == 4096 == b["program"]["env_steps"]
    assert a["program"]["learner_node"]["learner_steps"] == b["program"]["learner_node"]["learner_steps"] == 16
    # The optimiser state carried over: Adam's step counts continue from the checkpoint's, they do not restart.
    steps_ck = [float(v["step"]) for v in ck["program"]["learner"]["optimizer"]["state"].values()]
    steps_a = [float(v["step"]) for v in la["optimizer"]["state"].values()]
    steps_b = [float(v["step"]) for v in lb["optimizer"]["state"].values()]
    assert steps_a == steps_b and all(x == 2 * y > 0 for x, y in zip(steps_b, steps_ck))
    # Runner counters: episodes and wall time go on from the checkpoint's values, and the window of
    # recent returns holds the checkpoint's last returns followed by the ones finished since.
    rc, rb = ck["runner"], b["runner"]
    new_episodes = rb["episodes"] - rc["episodes"]
    assert 0 < new_episodes < 100 and rc["episodes"] > new_episodes
    assert rb["recent_returns"] == (rc["recent_returns"] + rb["recent_returns"][-new_episodes:])[-100:]
    assert rb["wall_time_s"] > rc["wall_time_s"]
    rows = [r for r in resumed.history if "episodes" in r]
    assert rows[0]["env_steps"] > 2048 and rows[0]["episodes"] >= rc["episodes"]
    assert rows[0]["wall_time_s"] > rc["wall_time_s"] and rows[-1]["episodes"] == rb["episodes"]
    # metrics.csv: the rows the crashed run wrote after its checkpoint (2304, 2560) were dropped and the
    # resumed run's rows written in their place, so no env_steps row is duplicated or missing.
    fa, fb = _rows(full.run_dir), _rows(part)
    assert [r["env_steps"] for r in fa] == [r["env_steps"] for r in fb]
    after = [r for r in fb if int(r["env_steps"]) > 2048 and r["episodes"]]
    assert [int(r["episodes"]) for r in after] == [int(r["episodes"]) for r in rows]


def test_checkpoint_restores_exact_learner_state(tmp_path, tree_differences):
    r = shoal.train("ppo", "CartPole-v1", steps=1024, seed=1, run_dir=tmp_path / "r", quiet=True, tensorboard=False,
                    overrides={"eval_episodes": 0})
    tree, _ = load_checkpoint(list_checkpoints(r.run_dir / "checkpoints")[-1])
    from shoal.agents.pg.builder import ActorCriticBuilder
    from shoal.agents.pg.config import PPOConfig
    from shoal.envs import env_spec

    b = ActorCriticBuilder(PPOConfig(**{**r.config.agent.__dict__}), env_spec("CartPole-v1"), total_steps=1024)
    learner = b.make_learner(b.make_networks(), {})
    fresh = learner.state()
    saved = tree["program"]["learner"]
    assert tree_differences(fresh, saved)  # a fresh learner differs, so the comparison below can fail
    learner.load_state(saved)
    assert tree_differences(learner.state(), saved) == []  # every tensor: networks, optimiser, generator
