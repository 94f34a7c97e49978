"""IMPALA with two learner ranks averaging gradients, without Ray, solves CartPole-v1."""

import pytest

import shoal


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_impala_two_learners_without_ray_learns_cartpole(tmp_path):
    """The single learner's in-process threshold (``tests/topologies/test_impala.py``) with ``num_learners=2``."""
    r = shoal.train("impala", "CartPole-v1", steps=300_000, seed=0, run_dir=tmp_path / "run", num_actors=4,
                    num_learners=2, quiet=True, tensorboard=False, overrides={"eval_every": 20_000, "target_return": 475})
    print(f"impala 2 learners inprocess: eval {r.eval['mean_return']:.1f} after {r.env_steps} steps, {r.wall_time_s:.1f} s")
    assert r.eval["mean_return"] >= 475
