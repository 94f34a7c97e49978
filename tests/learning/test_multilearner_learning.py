"""Two learners averaging gradients solve CartPole-v1 on Ray, from the command line."""

import json

import pytest

from shoal.cli import main


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_ppo_two_learners_two_actors_on_ray_solves_cartpole(tmp_path):
    """`shoal train ppo --env CartPole-v1 --backend ray --num-learners 2 --num-actors 2` (its default 50k steps)."""
    run_dir = tmp_path / "run"
    code = main(["train", "ppo", "--env", "CartPole-v1", "--backend", "ray", "--num-learners", "2", "--num-actors", "2",
                 "--run-dir", str(run_dir), "--quiet"])
    assert code == 0
    config = (run_dir / "config.yaml").read_text()
    assert "num_learners: 2" in config
    assert json.loads((run_dir / "eval.json").read_text())["mean_return"] >= 475
