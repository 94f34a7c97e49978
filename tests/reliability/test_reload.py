"""`shoal eval` on a finished run rebuilds its policy from config.yaml and the last checkpoint exactly."""

import json

import pytest

import shoal
from shoal.run.reload import evaluate_run

RUNS = [
    ("ppo", "CartPole-v1", 2048, {"normalize_obs": True}),  # observation statistics live in the networks
    ("ppo", "Pendulum-v1", 2048, {"rollout_length": 256, "normalize_obs": True}),  # Gaussian, clipped to bounds
    ("sac", "Pendulum-v1", 300, {"learning_starts": 100, "batch_size": 32, "hidden": [16, 16]}),
]


@pytest.mark.parametrize("algo, env, steps, overrides", RUNS, ids=[f"{r[0]}-{r[1]}" for r in RUNS])
def test_eval_of_a_finished_run_reproduces_its_final_evaluation(algo, env, steps, overrides, tmp_path):
    run = shoal.train(algo, env, steps=steps, seed=0, run_dir=tmp_path / "r", quiet=True, tensorboard=False,
                      overrides={"eval_episodes": 5, **overrides})
    again = evaluate_run(tmp_path / "r", episodes=5)  # the default seed: the run's own evaluation seed
    saved = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert again["seed"] == saved["seed"] == run.eval["seed"] and again["env_steps"] == run.env_steps
    assert again["returns"] == saved["returns"] == run.eval["returns"]  # every episode, to the last digit
