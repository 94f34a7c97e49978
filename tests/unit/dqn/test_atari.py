"""The Atari wrappers' logic on a tiny fake ALE-like env, step by step (the real emulator: tests/unit/envs/test_ale.py)."""

import sys

import gymnasium as gym
import numpy as np
import pytest

from shoal.envs.atari import (
    AtariEnv,
    ClipReward,
    EpisodicLife,
    FireOnLifeLoss,
    FireReset,
    MaxAndSkip,
    NoopReset,
    WarpFrame,
    make_atari_env,
    wrap_atari,
)
from shoal.errors import EnvError

H, W = 210, 160


class FakeALE:
    def __init__(self, env):
        self.env = env

    def lives(self):
        return self.env.lives_left


class FakeAtari(gym.Env):
    """Frame t is black with a white column at x = t; rewards +2.5 for action 2, -3 for action 3, else 0.

    A life is lost at every step listed in ``life_loss_at``; the game ends when no lives are
    left or after ``max_t`` steps. Every action and reset is recorded.
    """

    metadata: dict = {}

    def __init__(self, life_loss_at=(), lives=3, max_t=1000):
        self.observation_space = gym.spaces.Box(0, 255, (H, W, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(4)
        self.ale = FakeALE(self)
        self.life_loss_at, self.start_lives, self.max_t = set(life_loss_at), lives, max_t
        self.actions, self.resets = [], 0

    def get_action_meanings(self):
        return ["NOOP", "FIRE", "RIGHT", "LEFT"]

    def frame(self, t):
        f = np.zeros((H, W, 3), np.uint8)
        f[:, t % W] = 255
        return f

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.lives_left = 0, self.start_lives
        self.resets += 1
        return self.frame(0), {}

    def step(self, action):
        self.actions.append(int(action))
        self.t += 1
        if self.t in self.life_loss_at:
            self.lives_left -= 1
        reward = {2: 2.5, 3: -3.0}.get(int(action), 0.0)
        return self.frame(self.t), reward, self.lives_left == 0, self.t >= self.max_t, {}


def test_noop_reset_takes_1_to_noop_max_noops():
    counts = set()
    for seed in range(20):
        env = FakeAtari()
        obs, _ = NoopReset(env, noop_max=5).reset(seed=seed)
        n = len(env.actions)
        assert 1 <= n <= 5 and set(env.actions) == {0}
        assert np.array_equal(obs, env.frame(n))
        counts.add(n)
    assert len(counts) > 1  # random, from the env's seeded generator


def test_max_and_skip_repeats_sums_and_max_pools_the_last_two_frames():
    env = FakeAtari()
    w = MaxAndSkip(env, skip=4)
    w.reset()
    obs, reward, term, trunc, _ = w.step(2)
    assert env.actions == [2, 2, 2, 2] and reward == 10.0
    lit = np.flatnonzero(obs[0, :, 0])
    assert list(lit) == [3, 4]  # max of frames 3 and 4


def test_max_and_skip_stops_at_the_end_of_the_game():
    env = FakeAtari(life_loss_at=(1, 2), lives=2)
    w = MaxAndSkip(env, skip=4)
    w.reset()
    _, reward, term, _, _ = w.step(3)
    assert term and env.actions == [3, 3] and reward == -6.0


def test_episodic_life_ends_episodes_at_a_lost_life_without_resetting_the_game():
    env = FakeAtari(life_loss_at=(3, 6, 9), lives=3)
    w = EpisodicLife(env)
    w.reset()
    for t in range(1, 4):
        _, _, term, _, _ = w.step(2)
        assert term == (t == 3)
    w.reset()  # a lost life: the game continues with a no-op
    assert env.resets == 1 and env.actions[-1] == 0 and env.t == 4
    while not term or not w.game_over:
        _, _, term, _, _ = w.step(2)
    assert env.lives_left == 0
    w.reset()  # game over: a real reset
    assert env.resets == 2 and w.lives == 3


def test_fire_reset_presses_fire_then_2():
    env = FakeAtari()
    FireReset(env).reset()
    assert env.actions == [1, 2]


def test_fire_reset_needs_fire():
    env = FakeAtari()
    env.get_action_meanings = lambda: ["NOOP", "UP", "DOWN"]
    with pytest.raises(EnvError, match="FIRE"):
        FireReset(env)


def test_warp_frame_grey_84x84():
    class Solid(FakeAtari):
        def frame(self, t):
            f = np.zeros((H, W, 3), np.uint8)
            f[..., 0], f[..., 1], f[..., 2] = 200, 100, 50
            f[:, W // 2:] = 0
            return f

    w = WarpFrame(Solid(), 84)
    obs, _ = w.reset()
    assert obs.shape == (84, 84) and obs.dtype == np.uint8 and w.observation_space.shape == (84, 84)
    grey = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert np.all(obs[:, :42] == grey) and np.all(obs[:, 42:] == 0)


def test_warp_frame_area_resampling_averages():
    w = WarpFrame(FakeAtari(), 84)
    # a white column 1 px wide of 160 covers 84/160 of an output column: about 134 grey
    obs = w.observation(FakeAtari().frame(0))
    assert obs[:, 0].min() == obs[:, 0].max() == round(255 * 84 / 160)
    assert np.all(obs[:, 2:] == 0)


def test_clip_reward():
    env = ClipReward(FakeAtari())
    env.reset()
    assert env.step(2)[1] == 1.0 and env.step(3)[1] == -1.0 and env.step(0)[1] == 0.0


def test_full_chain_gives_stacked_84x84_frames():
    env = FakeAtari(life_loss_at=(40,), lives=2)
    w = wrap_atari(env)
    obs, _ = w.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert all(np.array_equal(obs[0], obs[i]) for i in range(4))  # reset pads with the first frame
    assert env.actions[-8:] == [1] * 4 + [2] * 4  # FIRE reset after the no-ops, each action held 4 frames
    obs2, r, term, trunc, _ = w.step(2)
    assert r == 1.0 and np.array_equal(obs2[:3], obs[1:]) and not np.array_equal(obs2[3], obs[3])
    assert w.observation_space.shape == (4, 84, 84)


def test_episodic_life_starts_a_new_game_on_a_seeded_reset():
    env = FakeAtari(life_loss_at=(3,), lives=3)
    w = EpisodicLife(env)
    w.reset(seed=0)
    for _ in range(3):
        w.step(2)
    w.reset(seed=1)
    assert env.resets == 2 and env.t == 0


def test_fire_reset_keeps_the_reset_info():
    class Info(FakeAtari):
        def reset(self, **kwargs):
            return super().reset(**kwargs)[0], {"from_reset": True}

    assert FireReset(Info()).reset()[1] == {"from_reset": True}


def test_fire_on_life_loss_takes_the_steps_of_a_life_loss_reset_in_the_same_step():
    env = FakeAtari(life_loss_at=(2,), lives=3)
    w = FireOnLifeLoss(env)
    w.reset()
    assert w.step(2)[1] == 2.5 and env.actions == [2]
    _, reward, term, _, _ = w.step(2)  # the life is lost here: no-op, FIRE, 2 follow, their reward counted
    assert env.actions == [2, 2, 0, 1, 2] and reward == 5.0 and not term


def test_the_time_limit_ends_the_game_not_a_life():
    env = FakeAtari(life_loss_at=(4,), lives=3)
    w = wrap_atari(env, noop_max=0, frame_skip=1, fire_reset=False, frame_stack=1, max_episode_steps=6)
    w.reset(seed=0)
    ends = []
    for _ in range(6):
        _, _, term, trunc, info = w.step(2)
        if term or trunc:
            ends.append((term, trunc, info.get("episode")))
            w.reset()
    # A life lost at game step 4 (the game goes on after one no-op step), the whole game cut at
    # game step 6 (5 steps of action 2 and the no-op) and reset.
    assert ends == [(True, False, None), (False, True, {"r": 12.5, "l": 6})]
    assert env.resets == 2 and env.t == 1 and env.actions == [2] * 4 + [0] + [2] * 2


def test_the_full_chain_reports_the_raw_score_of_the_game():
    env = FakeAtari(life_loss_at=(40, 80), lives=2)
    w = wrap_atari(env)  # rewards 2.5 a frame for action 2, clipped to 1 per agent step
    w.reset(seed=0)
    clipped, reports = 0.0, []
    while not reports:
        _, r, term, trunc, info = w.step(2)
        clipped += r
        if "episode" in info:
            reports.append(info["episode"])
            score = 2.5 * sum(1 for a in env.actions if a == 2)  # FIRE resets' action 2 included
        elif term or trunc:
            w.reset()
    assert reports[0]["r"] == score and clipped < score / 4


def test_make_atari_env_without_ale_py_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # as if ale-py were not installed
    with pytest.raises(EnvError, match=r"pip install 'shoal\[atari\]'"):
        make_atari_env("ALE/Pong-v5")
    with pytest.raises(EnvError):
        AtariEnv("ALE/Pong-v5")()
