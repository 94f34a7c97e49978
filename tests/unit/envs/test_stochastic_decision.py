"""h-DQN's stochastic decision process: transitions by hand, measured probabilities, rewards, the 100-step limit."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import shoal  # noqa: F401  (registers the ids)
from shoal.envs import make_vec_env
from shoal.envs.make import env_spec
from shoal.envs.toy.stochastic_decision import (
    LEFT,
    RIGHT,
    StochasticDecision,
    one_hot_state_reached,
    one_hot_stochastic_decision,
)

ID = "shoal/StochasticDecision-v0"


class _Coin:
    """A stand-in for ``np_random`` whose ``random()`` returns the given draws in turn."""

    def __init__(self, draws: list[float]) -> None:
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0)


def _at(state: int, visited: bool = False, draws: list[float] | None = None) -> StochasticDecision:
    env = StochasticDecision()
    env.reset(seed=0)
    env.state, env.visited_last = state, visited
    if draws is not None:
        env._np_random = _Coin(draws)  # type: ignore[assignment]
    return env


def test_passes_gymnasium_env_checker_and_is_registered() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(ID).unwrapped, skip_render_check=False)
    spec = env_spec(ID)
    assert spec.num_obs_states == 6 and spec.discrete and spec.num_actions == 2
    assert gym.spec(ID).max_episode_steps == 100


def test_starts_in_the_second_state() -> None:
    env = gym.make(ID)
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        assert obs == 1 and info == {"visited_last": False}


@pytest.mark.parametrize("state,action,draw,expected", [
    (1, LEFT, None, 0), (3, LEFT, None, 2), (5, LEFT, None, 4),  # left never draws and always moves left
    (1, RIGHT, 0.49, 2), (3, RIGHT, 0.0, 4), (4, RIGHT, 0.3, 5),  # right succeeds below p_right = 0.5
    (1, RIGHT, 0.5, 0), (3, RIGHT, 0.99, 2), (4, RIGHT, 0.7, 3),  # ... and moves left otherwise
    (5, RIGHT, 0.2, 5), (5, RIGHT, 0.8, 4),  # right in the last state stays there, or slips left
])
def test_hand_checked_transitions(state: int, action: int, draw: float | None, expected: int) -> None:
    env = _at(state, draws=[] if draw is None else [draw])
    obs, reward, terminated, truncated, _ = env.step(action)
    assert obs == expected and env.state == expected
    assert terminated == (expected == 0) and not truncated
    assert draw is None or env._np_random.draws == []  # type: ignore[attr-defined]  (one draw per right)


def test_right_moves_right_half_the_time_measured_over_many_steps() -> None:
    env = StochasticDecision()
    env.reset(seed=123)
    n, right, stay = 40_000, 0, 0
    for i in range(n):
        start = 2 + i % 3  # states 2, 3, 4: away from both ends
        env.state = start
        env.step(RIGHT)
        right += env.state == start + 1
        env.state = 5
        env.step(RIGHT)
        stay += env.state == 5
    # Binomial(40000, 0.5): one standard deviation is 0.0025; 4 of them.
    assert abs(right / n - 0.5) < 0.01 and abs(stay / n - 0.5) < 0.01
    for _ in range(1000):  # left is not random
        env.state = 3
        env.step(LEFT)
        assert env.state == 2


def test_reward_is_one_after_visiting_the_last_state_and_a_hundredth_otherwise() -> None:
    env = _at(1)
    assert env.step(LEFT)[1:3] == (0.01, True)  # straight back: s6 never seen
    env = _at(4, draws=[0.1, 0.9])  # right to 5, then a slip back to 4
    assert env.step(RIGHT)[1] == 0.0 and env.visited_last
    assert env.step(RIGHT)[0] == 4 and env.visited_last  # leaving s6 keeps the flag
    rewards = [env.step(LEFT)[1] for _ in range(4)]  # 3, 2, 1, 0
    assert rewards == [0.0, 0.0, 0.0, 1.0] and env.state == 0
    env.reset(seed=1)  # a new episode forgets the visit
    assert not env.visited_last and env.step(LEFT)[1] == 0.01


def test_episode_returns_of_the_two_simple_policies() -> None:
    """Always left: every episode 0.01. Right until s6, then left: 1 with the gambler's-ruin probability 1/5."""
    env = gym.make(ID)
    obs, _ = env.reset(seed=0)
    assert env.step(LEFT)[1:3] == (0.01, True)
    returns = []
    for ep in range(4000):
        obs, _ = env.reset(seed=ep)
        total, done, seen = 0.0, False, False
        while not done:
            seen = seen or obs == 5
            obs, r, term, trunc, _ = env.step(LEFT if seen else RIGHT)
            total += r
            done = term or trunc
        returns.append(total)
    returns = np.array(returns)
    assert set(np.round(returns, 4)) <= {0.01, 1.0}
    # P(reach s6 before s1 from s2) = 1/5; expected return 0.2 + 0.8 * 0.01 = 0.208; sd over 4000 about 0.0063.
    assert abs(returns.mean() - 0.208) < 0.025


def test_the_registered_env_truncates_at_100_steps() -> None:
    env = gym.make(ID)
    env.reset(seed=0)
    env.unwrapped.p_right = 1.0  # right always succeeds: the walker sits in s6 and never ends the episode
    for t in range(1, 101):
        obs, reward, terminated, truncated, _ = env.step(RIGHT)
        assert not terminated and reward == 0.0
        assert truncated == (t == 100)
    assert obs == 5


def test_seeding_reproduces_episodes_through_np_random() -> None:
    def walk(seed: int) -> list[int]:
        """The states of 200 steps of "right", restarting (unseeded) where an episode ends."""
        env = gym.make(ID)
        env.reset(seed=seed)
        states = []
        for _ in range(200):
            obs, _, terminated, truncated, _ = env.step(RIGHT)
            states.append(int(obs))
            if terminated or truncated:
                env.reset()
        return states

    assert walk(7) == walk(7)
    assert any(walk(7) != walk(s) for s in range(8, 12))


def test_vector_env_and_one_hot_variant() -> None:
    venv = make_vec_env(ID, 3, seed=0)
    assert venv.obs.tolist() == [1, 1, 1]
    step = venv.step(np.array([LEFT, LEFT, RIGHT]))
    assert step.terminated[:2].all() and step.reward[:2].tolist() == pytest.approx([0.01, 0.01])
    assert step.final_obs[:2].tolist() == [0, 0] and step.next_obs[:2].tolist() == [1, 1]
    venv.close()
    env = one_hot_stochastic_decision()
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [0, 1, 0, 0, 0, 0]
    assert env_spec(one_hot_stochastic_decision).obs_shape == (6,)
    obs = np.eye(6)[[1, 4, 0]]
    assert one_hot_state_reached(obs, np.array([1, 3, 0])).tolist() == [True, False, True]


def test_rejects_bad_actions_and_settings() -> None:
    env = StochasticDecision()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be 0"):
        env.step(2)
    with pytest.raises(ValueError, match="at least 3 states"):
        StochasticDecision(num_states=2)
    with pytest.raises(ValueError, match="probability"):
        StochasticDecision(p_right=1.5)


def test_ansi_render() -> None:
    env = _at(5, visited=True)
    assert env.render() is None
    env = StochasticDecision(render_mode="ansi")
    env.reset(seed=0)
    assert env.render() == "-o----"
    env.state, env.visited_last = 3, True
    assert env.render() == "---o-*"
