"""shoal/CartPoleNoVel-v1: CartPole-v1 step for step, observing only position and angle."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import shoal  # noqa: F401  (registers the ids)
from shoal.envs.make import make_vec_env


def test_single_env_is_cartpole_step_for_step_with_two_observations():
    full, novel = gym.make("CartPole-v1"), gym.make("shoal/CartPoleNoVel-v1")
    assert novel.spec is not None and novel.spec.max_episode_steps == 500 == full.spec.max_episode_steps
    assert novel.observation_space.shape == (2,)
    rng = np.random.default_rng(0)
    for seed in (0, 1, 7):
        o_full, _ = full.reset(seed=seed)
        o_novel, _ = novel.reset(seed=seed)
        np.testing.assert_array_equal(o_novel, o_full[[0, 2]])
        for _ in range(600):
            a = int(rng.integers(2))
            f, n = full.step(a), novel.step(a)
            np.testing.assert_array_equal(n[0], f[0][[0, 2]])
            assert n[1:4] == f[1:4]
            assert novel.observation_space.contains(n[0]) or n[2]
            if f[2] or f[3]:
                break


def test_time_limit_is_cartpole_v1s():
    env = gym.make("shoal/CartPoleNoVel-v1")
    env.reset(seed=0)
    env.unwrapped.state = np.zeros(4)
    steps, truncated = 0, False
    while not truncated:
        # a balancing controller on the hidden state, so the episode lasts to the limit
        x, x_dot, th, th_dot = env.unwrapped.state
        _, _, terminated, truncated, _ = env.step(int(th + 0.5 * th_dot + 0.01 * x + 0.1 * x_dot > 0))
        assert not terminated
        steps += 1
    assert steps == 500


def test_batched_twin_matches_the_single_envs_across_resets_and_time_limits():
    """Copy ``i`` is ``gym.make(id)`` reset with ``seed=3 + i`` and, at each episode end, reset again without a
    seed (its generator goes on, the batched env's autoreset seeding): flags, final and next observations agree
    through many episode ends, terminations and 500-step truncations both."""
    vec = make_vec_env("shoal/CartPoleNoVel-v1", 4, seed=3)
    assert type(vec.env).__name__ == "BatchedCartPoleNoVel"
    singles = [gym.make("shoal/CartPoleNoVel-v1") for _ in range(4)]
    obs = vec.reset(seed=3)
    for i, e in enumerate(singles):
        o, _ = e.reset(seed=3 + i)
        np.testing.assert_array_equal(obs[i], o)
    rng = np.random.default_rng(1)
    lengths = np.zeros(4, int)
    ends = {"terminated": 0, "truncated": 0}
    for _ in range(1200):
        # copies 0 and 1 balance on the hidden state (mostly), so their episodes reach the time limit
        a = rng.integers(2, size=4)
        for i in (0, 1):
            x, x_dot, th, th_dot = singles[i].unwrapped.state
            a[i] = int(th + 0.5 * th_dot + 0.01 * x + 0.1 * x_dot > 0)
        step = vec.step(a)
        lengths += 1
        for i, e in enumerate(singles):
            o, r, term, trunc, _ = e.step(int(a[i]))
            assert bool(step.terminated[i]) == term and bool(step.truncated[i]) == trunc
            assert float(step.reward[i]) == r
            if term or trunc:
                np.testing.assert_array_equal(step.final_obs[i], o)
                assert not trunc or lengths[i] == 500
                ends["truncated" if trunc else "terminated"] += 1
                lengths[i] = 0
                o, _ = e.reset()
            np.testing.assert_array_equal(step.next_obs[i], o)
    assert ends["truncated"] >= 2 and ends["terminated"] >= 20, ends
