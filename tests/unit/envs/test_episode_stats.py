"""Episode reports through VecEnv: the env's own return where it reports one, the summed rewards otherwise."""

import gymnasium as gym
import numpy as np

from shoal.envs import make_vec_env
from shoal.envs.episode_stats import EpisodeStats, EpisodeTracker, carry_episode


class Lives(gym.Env):
    """Reward 3 a step; a life lasts ``life`` steps, the game ``lives`` lives. Resets are counted."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, life=3, lives=2):
        self.life, self.start_lives, self.resets = life, lives, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.lives = 0, self.start_lives
        self.resets += 1
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t % self.life == 0:
            self.lives -= 1
        return np.zeros(2, np.float32), 3.0, self.lives == 0, False, {}


class EndAtLifeLoss(gym.Wrapper):
    """A learner's view: each lost life ends an episode, the game goes on; rewards scaled by 1/3."""

    def reset(self, **kwargs):
        if getattr(self, "over", True) or kwargs.get("seed") is not None:
            self.over = False
            self.seen = self.env.unwrapped.start_lives
            return self.env.reset(**kwargs)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.over = term or trunc
        lost = self.env.unwrapped.lives < self.seen
        self.seen = self.env.unwrapped.lives
        return obs, r / 3.0, term or lost, trunc, info


def run(venv, steps):
    ends, dones = [], 0
    for _ in range(steps):
        step = venv.step(np.zeros(venv.num_envs, np.int64))
        dones += int(step.done.sum())
        e = step.extras.get("episodes")
        if e is not None:
            ends.extend(zip(e.index.tolist(), e.returns.tolist(), e.lengths.tolist()))
    return ends, dones


def test_reports_are_whole_games_with_the_raw_return_under_life_loss_and_reward_scaling():
    venv = make_vec_env(lambda: EndAtLifeLoss(EpisodeStats(Lives(life=3, lives=2))), 2, seed=0)
    ends, dones = run(venv, 12)
    assert dones == 2 * 4  # the learner's episodes: one per life
    assert ends == [(0, 18.0, 6), (1, 18.0, 6)] * 2  # the game's: 2 lives x 3 steps x reward 3


def test_without_reports_the_returned_rewards_are_summed_per_episode():
    venv = make_vec_env(lambda: EndAtLifeLoss(Lives(life=3, lives=2)), 2, seed=0)
    ends, dones = run(venv, 6)
    assert dones == 4 and ends == [(0, 3.0, 3), (1, 3.0, 3)] * 2


def test_gymnasium_record_episode_statistics_is_read_too():
    def factory():
        return gym.wrappers.TransformReward(gym.wrappers.RecordEpisodeStatistics(Lives(life=2, lives=2)), lambda r: 0.0)

    ends, _ = run(make_vec_env(factory, 1, seed=0), 4)
    assert ends == [(0, 12.0, 4)]


def test_a_seeded_reset_starts_afresh():
    venv = make_vec_env(lambda: EpisodeStats(Lives(life=5, lives=1)), 1, seed=0)
    run(venv, 3)
    venv.reset(seed=1)
    ends, _ = run(venv, 5)
    assert ends == [(0, 15.0, 5)]


def test_a_report_made_while_resetting_is_counted():
    tracker = EpisodeTracker(2)
    tracker.reset({"episode_stats": np.array([True, True]), "_episode_stats": np.array([True, True])})
    done = np.array([False, True])
    # The ending step reported nothing (a life was lost); the reset, stepping on, ended the game.
    info = {"episode": {"r": np.array([0.0, 7.0]), "l": np.array([0, 9])}, "_episode": done}
    ends = tracker.step(np.array([1.0, 1.0]), done, info)
    assert ends.index.tolist() == [1] and ends.returns.tolist() == [7.0] and ends.lengths.tolist() == [9]
    assert tracker.step(np.zeros(2), done, {}) is None  # a lost life with no report: no episode


def test_carry_episode_keeps_the_report_of_a_step_taken_inside_reset():
    assert carry_episode({"episode": {"r": 1.0, "l": 2}}, {"x": 1}) == {"x": 1, "episode": {"r": 1.0, "l": 2}}
    assert carry_episode({"lives": 3}, {"x": 1}) == {"x": 1}
