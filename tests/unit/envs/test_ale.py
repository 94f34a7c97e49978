"""The Atari preprocessing and the scores shoal reports, on the real emulator (ale-py ships its ROMs).

A :class:`RawScore` recorder sits right on the emulator, under every shoal wrapper, and sums
the raw rewards of each game: what shoal reports as an episode return must be that sum,
while the learner sees clipped rewards and an episode end at each lost life.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest

ale_py = pytest.importorskip("ale_py")
gym.register_envs(ale_py)

from shoal.data import ArrayStorage, FrameStackStorage, NStepTransitionAdder, ReplayTable, Uniform  # noqa: E402
from shoal.envs import make_vec_env  # noqa: E402
from shoal.envs.atari import (  # noqa: E402
    _LUMA,
    AtariEnv,
    ClipReward,
    EpisodicLife,
    FireOnLifeLoss,
    MaxAndSkip,
    NoopReset,
    WarpFrame,
    _area_matrix,
    make_atari_env,
    wrap_atari,
)
from shoal.run.evaluate import evaluate, evaluation_env  # noqa: E402

RECORDERS: list[tuple[bool, "RawScore"]] = []  # (episodic_life, recorder) of every RecordedAtari env made


class RawScore(gym.Wrapper):
    """On the emulator itself: the raw rewards of each finished game, and how often the game was reset."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.games: list[float] = []
        self.score, self.resets = 0.0, 0

    def reset(self, **kwargs):
        self.score, self.resets = 0.0, self.resets + 1
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.score += float(reward)
        if terminated or truncated:
            self.games.append(self.score)
        return obs, reward, terminated, truncated, info


@dataclass(frozen=True)
class RecordedAtari(AtariEnv):
    """An :class:`AtariEnv` whose emulator is watched by a :class:`RawScore` (listed in ``RECORDERS``)."""

    def __call__(self) -> gym.Env:
        raw = RawScore(gym.make(self.env_id, frameskip=1))
        RECORDERS.append((self.episodic_life, raw))
        return wrap_atari(raw, episodic_life=self.episodic_life, clip_rewards=self.clip_rewards,
                          frame_stack=self.frame_stack, max_episode_steps=27_000)


def raw_env(env_id: str = "ALE/Pong-v5", sticky: float = 0.0) -> gym.Env:
    return gym.make(env_id, frameskip=1, repeat_action_probability=sticky)


def chain(env: gym.Env) -> list[type]:
    out = []
    while isinstance(env, gym.Wrapper):
        out.append(type(env))
        env = env.env
    return out


# -- the wrappers, one by one -------------------------------------------------------------

def test_noop_reset_starts_after_1_to_30_noop_frames():
    env = NoopReset(raw_env())
    frames = {env.reset(seed=s)[1]["episode_frame_number"] for s in range(5)}
    assert all(1 <= f <= 30 for f in frames) and len(frames) > 1


def test_max_and_skip_sums_4_frames_of_reward_and_max_pools_the_last_two():
    skip, ref = MaxAndSkip(raw_env(), 4), raw_env()
    skip.reset(seed=3)
    ref.reset(seed=3)
    rng = np.random.default_rng(0)
    rewards = []
    for _ in range(300):
        a = int(rng.integers(0, 6))
        obs, reward, term, _, _ = skip.step(a)
        frames, total = [], 0.0
        for _ in range(4):
            f, r, t, _, _ = ref.step(a)
            frames.append(f)
            total += r
        assert reward == total and term == t
        np.testing.assert_array_equal(obs, np.maximum(frames[-2], frames[-1]))
        rewards.append(reward)
    assert any(r != 0 for r in rewards)  # Pong scored points in these 1200 frames


def test_warp_frame_is_84x84_grey_within_one_level_of_float_luminance_and_area_resampling():
    env = raw_env("ALE/Breakout-v5")
    frame, _ = env.reset(seed=0)
    for _ in range(40):
        frame, *_ = env.step(1)
    obs = WarpFrame(env).observation(frame)
    grey = frame.astype(np.float32) @ _LUMA
    exact = _area_matrix(210, 84) @ grey @ _area_matrix(160, 84).T
    assert obs.shape == (84, 84) and obs.dtype == np.uint8
    assert np.abs(obs.astype(np.float32) - exact).max() <= 1.0
    assert obs.std() > 10  # a real screen, not a blank one


def test_frame_stack_holds_the_last_4_preprocessed_frames():
    env = make_atari_env("ALE/Breakout-v5")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    for _ in range(5):
        nxt, *_ = env.step(3)
        np.testing.assert_array_equal(nxt[:3], obs[1:])
        obs = nxt
    assert any(not np.array_equal(obs[i], obs[i + 1]) for i in range(3))


def test_life_loss_ends_the_learners_episode_but_the_game_resets_only_when_it_is_over():
    raw = RawScore(raw_env("ALE/Breakout-v5"))
    env = wrap_atari(raw, max_episode_steps=27_000)
    env.reset(seed=0)
    env.action_space.seed(0)
    learner_ends, report, frame = 0, None, 0
    while report is None:
        _, _, term, trunc, info = env.step(env.action_space.sample())
        if term or trunc:
            learner_ends += 1
            _, info_reset = env.reset()
            report = info.get("episode")
            if report is None:  # a life lost: the same game goes on
                assert raw.resets == 1 and info_reset["episode_frame_number"] > frame
            frame = info_reset.get("episode_frame_number", 0)
    assert learner_ends == 5  # Breakout's 5 lives
    assert raw.resets == 2 and raw.games == [report["r"]]  # one game, reset once it was over


def test_clipped_rewards_for_the_learner_raw_score_in_the_report():
    raw = RawScore(raw_env("ALE/SpaceInvaders-v5", sticky=0.25))
    env = wrap_atari(raw, max_episode_steps=27_000)
    env.reset(seed=1)
    env.action_space.seed(1)
    clipped, report = [], None
    while report is None:
        _, r, term, trunc, info = env.step(env.action_space.sample())
        clipped.append(r)
        report = info.get("episode")
        if term or trunc:
            env.reset()
    assert set(clipped) <= {-1.0, 0.0, 1.0}
    assert raw.games == [report["r"]] and report["r"] > sum(clipped) > 0  # invaders are worth 5 to 30 points
    assert report["l"] >= len(clipped)  # game steps, the resets' FIRE and no-op steps included


# -- what VecEnv, training and evaluation report -----------------------------------------

def test_vec_env_reports_pong_game_scores_equal_to_the_raw_reward_sum():
    RECORDERS.clear()
    venv = make_vec_env(RecordedAtari("ALE/Pong-v5"), 2, seed=0)
    rng = np.random.default_rng(0)
    reported: dict[int, list[float]] = {0: [], 1: []}
    while not (reported[0] and reported[1]):
        step = venv.step(rng.integers(0, 6, 2))
        ended = step.extras.get("episodes")
        if ended is not None:
            for i, r in zip(ended.index.tolist(), ended.returns.tolist()):
                reported[i].append(r)
    venv.close()
    recorders = [rec for _, rec in RECORDERS[-2:]]
    for i in (0, 1):
        assert reported[i] == recorders[i].games
        assert all(-21 <= r <= 21 and r == int(r) for r in reported[i])


def test_vec_env_reports_breakout_games_not_lives():
    RECORDERS.clear()
    venv = make_vec_env(RecordedAtari("ALE/Breakout-v5"), 2, seed=0)
    rng = np.random.default_rng(0)
    returns, lengths, dones, steps = [], [], 0, 0
    while len(returns) < 4:
        step = venv.step(rng.integers(0, 4, 2))
        steps += 2
        dones += int(step.done.sum())
        ended = step.extras.get("episodes")
        if ended is not None:
            returns += ended.returns.tolist()
            lengths += ended.lengths.tolist()
    venv.close()
    games = sorted(g for _, rec in RECORDERS[-2:] for g in rec.games)
    assert sorted(returns) == games
    assert dones >= 5 * len(returns)  # 5 lives a game: the learner's episodes end 5 times as often
    assert sum(lengths) <= steps + 3 * dones and min(lengths) > 5 * 10  # whole games of 5 lives


def test_evaluation_plays_the_full_unclipped_game():
    env = evaluation_env("ALE/Breakout-v5")()
    layers = chain(env)
    assert EpisodicLife not in layers and ClipReward not in layers and FireOnLifeLoss in layers
    assert MaxAndSkip in layers and WarpFrame in layers and env.observation_space.shape == (4, 84, 84)
    env.close()
    assert evaluation_env(RecordedAtari("ALE/Breakout-v5")) == RecordedAtari("ALE/Breakout-v5", episodic_life=False,
                                                                              clip_rewards=False)

    RECORDERS.clear()
    rng = np.random.default_rng(0)

    def policy(obs):
        return rng.integers(0, 6, len(obs))

    res = evaluate(policy, RecordedAtari("ALE/SpaceInvaders-v5"), episodes=2, seed=5, max_steps=5000)
    firsts = [rec.games[0] for life, rec in RECORDERS if not life and rec.games]
    assert res["truncated_episodes"] == 0 and res["returns"] == firsts
    assert all(r > 1 and r % 5 == 0 for r in res["returns"])  # raw points, not clipped ones


def test_frame_storage_on_real_stacked_frames_matches_a_plain_storage():
    venv = make_vec_env("ALE/Breakout-v5", 2, seed=0)
    plain = ReplayTable(256, Uniform(seed=3), storage=ArrayStorage(256))
    frames = ReplayTable(256, Uniform(seed=3), storage=FrameStackStorage(256))
    adder = NStepTransitionAdder(3, 0.99)
    adder.add_first(venv.obs)
    rng = np.random.default_rng(0)
    inserted = ends = 0
    for t in range(300):
        step = venv.step(rng.integers(0, 4, 2))
        ends += int(step.done.sum())
        adder.add(rng.integers(0, 4, 2), step)
        items = adder.drain()
        if items is not None:
            np.testing.assert_array_equal(plain.insert(items), frames.insert(items))
            inserted += len(items["obs"])
        if t % 10 == 9:
            a, b = plain.sample(64), frames.sample(64)
            for key in a[0]:
                np.testing.assert_array_equal(a[0][key], b[0][key], err_msg=key)
    venv.close()
    assert inserted > 2 * 256 and ends >= 5  # wrapped around, through life-loss resets
    used = frames.storage.frame_capacity - frames.storage.num_free
    assert used <= 1.3 * len(frames)  # about one new frame per transition, not 8
    assert frames.storage.frames.nbytes < (plain.storage.arrays["obs"].nbytes + plain.storage.arrays["next_obs"].nbytes) / 6


def test_dqn_on_breakout_reports_game_scores(tmp_path):
    import shoal

    RECORDERS.clear()
    r = shoal.train("dqn", env=RecordedAtari("ALE/Breakout-v5"), steps=1500, run_dir=tmp_path / "run", quiet=True,
                    tensorboard=False, overrides={"learning_starts": 500, "batch_size": 32, "buffer_size": 1500,
                                                  "train_freq": 16, "gradient_steps": 1, "frame_storage": True,
                                                  "eval_episodes": 2, "eval_epsilon": 0.05, "eval_max_steps": 3000,
                                                  "checkpoint_every": 1500})
    assert (r.run_dir / "eval.json").exists() and (r.run_dir / "metrics.csv").exists()
    train_games = [g for life, rec in RECORDERS if life for g in rec.games]
    last = r.history[-1] if "episode_return_mean" in r.history[-1] else r.history[-2]
    assert last["episodes"] == len(train_games) >= 3
    assert last["episode_return_mean"] == pytest.approx(np.mean(train_games))
    assert last["episode_length_mean"] > 100  # games of 5 lives, not single lives
    eval_games = [rec.games[0] for life, rec in RECORDERS if not life and rec.games]
    saved = json.loads((r.run_dir / "eval.json").read_text())
    assert saved["truncated_episodes"] == 0 and saved["returns"] == eval_games


def test_ppo_through_the_cli_on_breakout_reports_whole_games(tmp_path):
    from shoal.cli import main

    run_dir = tmp_path / "breakout"
    argv = ["train", "ppo", "--env", "ALE/Breakout-v5", "--steps", "1024", "--quiet", "--run-dir", str(run_dir),
            "num_envs=2", "rollout_length=128", "epochs=1", "minibatch_size=128", "eval_episodes=1", "eval_max_steps=3000",
            "checkpoint_every=1024"]
    assert main(argv) == 0
    for name in ("config.yaml", "run.json", "metrics.csv", "eval.json"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "checkpoints").glob("ckpt-*"))
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r["episodes"] not in ("", "0")]
    last = rows[-1]
    k, mean = int(last["episodes"]), float(last["episode_return_mean"])
    assert 2 <= k <= 12  # 512 steps a copy: a few games of 5 lives, not 5 times as many lives
    assert float(last["episode_length_mean"]) > 100 and k * mean == pytest.approx(round(k * mean))  # whole scores
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["truncated_episodes"] == 0 and ev["mean_length"] > 100 and ev["returns"][0] == int(ev["returns"][0])
    out = tmp_path / "again.json"
    assert main(["eval", str(run_dir), "--episodes", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["returns"] == ev["returns"]  # `shoal eval` plays the same full game
