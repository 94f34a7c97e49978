"""`shoal bench` subcommands run and write their JSON (tiny sizes)."""

import json

import pytest

from shoal.cli import main


@pytest.mark.parametrize("args,key", [
    (["env", "--env", "CartPole-v1", "--num-envs", "4", "--seconds", "0.05"], "steps_per_s"),
    (["env", "--env", "CartPole-v1", "--num-envs", "64", "--vector", "batched", "--seconds", "0.05"], "steps_per_s"),
    (["sampler", "--env", "CartPole-v1", "--num-envs", "4", "--seconds", "0.05"], "ratio_to_raw"),
    (["sampler", "--env", "Pendulum-v1", "--num-envs", "4", "--vector", "batched", "--seconds", "0.05"], "ratio_to_raw"),
    (["learner", "--algo", "ppo", "--seconds", "0.05"], "samples_per_s"),
    (["learner", "--algo", "a2c", "--seconds", "0.05"], "samples_per_s"),
])
def test_bench_writes_json(tmp_path, args, key):
    out = tmp_path / "b.json"
    assert main(["bench", *args, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data and all(r[key] > 0 for r in data)


def test_bench_ppo_cartpole_reports_time_to_target(tmp_path, monkeypatch):
    from shoal.bench import measures

    def tiny(seed, eval_every):  # the real one trains to 475; here only the plumbing is tested
        from shoal.run.runner import train

        run = train("ppo", "CartPole-v1", steps=2048, seed=seed, run_dir=tmp_path / "r", quiet=True, tensorboard=False,
                    overrides={"eval_every": 1024, "target_return": 10.0, "eval_episodes": 2})
        return {"bench": "ppo-cartpole", "seed": seed, "wall_time_s": run.wall_time_s, "env_steps": run.env_steps,
                "eval_mean_return": run.eval["mean_return"], "solved": run.eval["mean_return"] >= 10}

    monkeypatch.setattr(measures, "ppo_cartpole", tiny)
    out = tmp_path / "p.json"
    assert main(["bench", "ppo-cartpole", "--json", str(out)]) == 0
    r = json.loads(out.read_text())[0]
    assert r["solved"] and r["env_steps"] <= 2048
