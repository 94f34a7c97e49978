"""Memory pays on shoal/CartPoleNoVel-v1 (no velocities): recurrent PPO solves it where feed-forward PPO cannot.

Both runs use the shipped defaults for the env (shoal/configs/ppo.yaml), the feed-forward one
with ``recurrent=false`` only, on the same 150k-step budget and seed.
"""

import pytest

import shoal

ENV = "shoal/CartPoleNoVel-v1"
BUDGET = 150_000
ROUND = 8 * 32  # env steps per iteration (num_envs * rollout_length): a run ends on the first round past the budget


def _train(tmp_path, name, algo="ppo", **overrides):
    return shoal.train(algo, ENV, seed=0, steps=BUDGET, run_dir=tmp_path / name, quiet=True, tensorboard=False,
                       overrides={"eval_every": 10_240, **overrides})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_recurrent_ppo_reaches_400_on_cartpole_without_velocities(tmp_path):
    r = _train(tmp_path, "lstm", target_return=400.0)
    evals = [h["eval_return_mean"] for h in r.history if "eval_return_mean" in h]
    assert r.env_steps < BUDGET, "the run must stop at an evaluation reaching the target, before its budget ends"
    assert evals and evals[-1] >= 400 and r.eval["mean_return"] >= 400


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_feed_forward_ppo_stays_below_250_on_the_same_budget(tmp_path):
    r = _train(tmp_path, "mlp", recurrent=False)
    evals = [h["eval_return_mean"] for h in r.history if "eval_return_mean" in h]
    assert BUDGET <= r.env_steps < BUDGET + ROUND and len(evals) >= 10
    assert max(evals + [r.eval["mean_return"]]) < 250


@pytest.mark.extended
@pytest.mark.timeout(600)
def test_recurrent_a2c_reaches_300_on_cartpole_without_velocities(tmp_path):
    """A2C with its shipped LSTM defaults (shoal/configs/a2c.yaml); its evaluations swing more than PPO's."""
    r = _train(tmp_path, "a2c", algo="a2c", target_return=300.0, eval_episodes=10)
    assert r.eval["mean_return"] >= 300
