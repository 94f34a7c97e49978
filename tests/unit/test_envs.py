"""Vector envs: same-step autoreset, final observations, truncation vs termination, sanity checks."""

import gymnasium as gym
import numpy as np
import pytest

from shoal.envs import env_spec, make_vec_env
from shoal.errors import EnvError


class _Countdown(gym.Env):
    """Terminates after 3 steps; observation is the step count."""

    observation_space = gym.spaces.Box(-10, 10, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, a):
        self.t += 1
        return np.array([self.t], np.float32), 1.0, self.t == 3, False, {}


class _Broken(_Countdown):
    def __init__(self, mode):
        self.mode = mode

    def step(self, a):
        obs, r, te, tr, i = super().step(a)
        if self.mode == "nan":
            obs[0] = np.nan
        elif self.mode == "shape":
            obs = np.zeros(3, np.float32)
        elif self.mode == "reward":
            r = float("inf")
        return obs, r, te, tr, i


def test_same_step_autoreset_gives_final_obs_and_reset_obs():
    env = make_vec_env(lambda: _Countdown(), 2, seed=0)
    for _ in range(2):
        s = env.step(np.zeros(2))
        assert not s.done.any()
    s = env.step(np.zeros(2))
    assert s.terminated.all() and not s.truncated.any()
    np.testing.assert_array_equal(s.final_obs, [[3.0], [3.0]])
    np.testing.assert_array_equal(s.next_obs, [[0.0], [0.0]])  # already the next episode's first obs
    np.testing.assert_array_equal(s.reward, [1.0, 1.0])  # a real transition, not a dummy reset step


def test_time_limit_is_truncation_not_termination():
    env = make_vec_env("CartPole-v1", 1, seed=0, env_kwargs={"max_episode_steps": 5})
    for t in range(5):
        s = env.step(np.array([t % 2]))
    assert s.truncated[0] and not s.terminated[0]
    assert not np.allclose(s.final_obs, s.next_obs)


@pytest.mark.parametrize("mode,match", [("nan", "non-finite observation"), ("shape", "shape"), ("reward", "non-finite reward")])
def test_misbehaving_env_is_named(mode, match):
    env = make_vec_env(lambda: _Broken(mode), 1, seed=0, mode="sync")
    with pytest.raises(EnvError, match=match):
        env.step(np.zeros(1))


def test_seeding_reproducible_and_distinct_per_copy():
    a = make_vec_env("CartPole-v1", 3, seed=7).obs
    b = make_vec_env("CartPole-v1", 3, seed=7).obs
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])


def test_unknown_env_and_specs():
    with pytest.raises(EnvError, match="did you mean 'CartPole-v1'"):
        make_vec_env("CartPol-v1", 1)
    s = env_spec("Pendulum-v1")
    assert not s.discrete and s.num_actions == 1 and s.action_high[0] == 2.0
    assert env_spec("CartPole-v1").num_actions == 2


def test_evaluation_cuts_endless_episodes():
    from shoal.run.evaluate import evaluate

    class Endless(_Countdown):
        def step(self, a):
            return np.array([0.0], np.float32), 1.0, False, False, {}

    res = evaluate(lambda obs: np.zeros(len(obs), np.int64), lambda: Endless(), episodes=3, seed=0, max_steps=50)
    assert res["truncated_episodes"] == 3 and res["mean_return"] == 50.0


class _Huge(gym.Env):
    """Finite float64 observations whose sum overflows, and finite float32 rewards whose float32 sum would."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2), {}

    def step(self, a):
        return np.array([1e308, 1e308]), 3e38, False, False, {}


def test_finite_values_whose_sum_overflows_are_not_taken_for_non_finite_ones():
    env = make_vec_env(lambda: _Huge(), 2, seed=0, mode="sync")
    s = env.step(np.zeros(2))
    assert np.isfinite(s.next_obs).all() and np.isfinite(s.reward).all()
