"""The slow simulator used to measure how topologies overlap waiting envs."""

import time

import gymnasium as gym
import numpy as np
import pytest

import shoal  # noqa: F401  (registers the shoal/ ids)
from shoal.envs.slow import SlowEnv
from shoal.errors import ConfigError


def test_every_step_waits_the_fixed_delay_and_dynamics_are_cartpoles():
    slow, plain = gym.make("shoal/SlowCartPole-v0", delay_s=0.005), gym.make("CartPole-v1")
    a, _ = slow.reset(seed=3)
    b, _ = plain.reset(seed=3)
    np.testing.assert_array_equal(a, b)
    t0 = time.perf_counter()
    for _ in range(20):
        a = slow.step(1)[0]
        b = plain.step(1)[0]
        np.testing.assert_array_equal(a, b)
    assert time.perf_counter() - t0 >= 20 * 0.005


def test_exponential_waits_average_the_delay_and_follow_the_seed():
    env = SlowEnv(gym.make("CartPole-v1"), delay_s=0.001, jitter="exponential")
    env.reset(seed=0)
    waits = [float(env._rng.exponential(env.delay_s)) for _ in range(4000)]
    assert 0.0009 < np.mean(waits) < 0.0011 and np.std(waits) > 0.0008  # exponential: std equals the mean
    env.reset(seed=0)
    assert float(env._rng.exponential(1.0)) == float(np.random.default_rng(0 + 104729).exponential(1.0))


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError):
        SlowEnv(gym.make("CartPole-v1"), delay_s=-1)
    with pytest.raises(ConfigError):
        SlowEnv(gym.make("CartPole-v1"), jitter="gamma")
