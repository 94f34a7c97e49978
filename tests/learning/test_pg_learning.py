"""PPO and A2C reach stated returns within stated step budgets, with fixed seeds.

Thresholds are the issue's: PPO CartPole-v1 eval >= 475 at 100k steps (seeds 0-2, both
backends), A2C >= 400 within 200k, Gaussian PPO on Pendulum-v1 >= -300 within 200k.
"""

import pytest

import shoal


def _eval(tmp_path, algo, env, seed, **kw):
    r = shoal.train(algo, env, seed=seed, run_dir=tmp_path / f"{algo}-{seed}-{kw.get('backend', 'inprocess')}",
                    quiet=True, tensorboard=False, **kw)
    return r.eval["mean_return"]


def test_ppo_cartpole_defaults_solve(tmp_path):
    """The README command's settings (no --steps: 50k steps) solve CartPole-v1."""
    assert _eval(tmp_path, "ppo", "CartPole-v1", 0) >= 475


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [pytest.param(0, marks=pytest.mark.slow), pytest.param(1, marks=pytest.mark.extended),
                                  pytest.param(2, marks=pytest.mark.extended)])
def test_ppo_kl_penalty_solves_cartpole(tmp_path, seed):
    """The adaptive-KL objective (otherwise the CartPole defaults) reaches 475 at 100k steps (minutes: slow)."""
    assert _eval(tmp_path, "ppo", "CartPole-v1", seed, steps=100_000, overrides={"loss": "kl_penalty"}) >= 475


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppo_cartpole_100k(tmp_path, seed):
    assert _eval(tmp_path, "ppo", "CartPole-v1", seed, steps=100_000) >= 475


# The slow set learns this with the same budget and bar in tests/reliability/test_killed_training.py, killed -9
# and resumed; the extended set runs this uninterrupted run.
@pytest.mark.extended
@pytest.mark.timeout(600)
@pytest.mark.ray
def test_ppo_cartpole_ray_two_actors(tmp_path):
    assert _eval(tmp_path, "ppo", "CartPole-v1", 0, steps=100_000, backend="ray", num_actors=2) >= 475


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a2c_cartpole_200k(tmp_path):
    assert _eval(tmp_path, "a2c", "CartPole-v1", 0, steps=200_000) >= 400


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ppo_gaussian_pendulum_200k(tmp_path):
    assert _eval(tmp_path, "ppo", "Pendulum-v1", 0, steps=200_000) >= -300


@pytest.mark.extended
@pytest.mark.timeout(600)
def test_ppo_with_torch_compile_trains(tmp_path):
    """The compile option runs end to end (compiling costs seconds, so it is off by default)."""
    assert _eval(tmp_path, "ppo", "CartPole-v1", 0, steps=30_000, overrides={"compile": True}) >= 150
