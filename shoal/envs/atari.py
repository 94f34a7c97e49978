"""Atari preprocessing (Mnih et al. 2015; Machado et al. 2018) as Gymnasium wrappers, and ALE env factories.

The DeepMind chain, applied by :func:`wrap_atari` in this order:

1. :class:`NoopReset`: a random number (1..30) of no-op actions after each reset;
2. :class:`MaxAndSkip`: repeat each action 4 frames, sum the rewards, and return the
   pixel-wise max of the last two frames (Atari sprites flicker between frames);
3. a time limit on the game (27k agent steps: 108k frames, 30 minutes of play);
4. :class:`~shoal.envs.episode_stats.EpisodeStats`: records the real game's score (the
   raw, unclipped rewards) and length, reported in ``info["episode"]`` when the game is over;
5. :class:`EpisodicLife`: a lost life ends the episode for the learner, while the game
   itself only resets when it is really over;
6. :class:`FireReset`: press FIRE after a reset in games that wait for it (and, in the
   full game of evaluation, :class:`FireOnLifeLoss` after each lost life);
7. :class:`WarpFrame`: 84x84 grey frames (luminance, area resampling);
8. :class:`ClipReward`: rewards clipped to their sign;
9. a stack of the last 4 frames, ``[4, 84, 84]`` uint8 (Gymnasium's ``FrameStackObservation``).

The learner sees clipped rewards and per-life episodes; what shoal reports (the
``episode_return_mean`` of training, evaluation) is the game score of whole games, from
step 4. Evaluation plays the full game unclipped (:meth:`AtariEnv.for_evaluation`).
The score counts every reward from the first agent step of a game on: the no-ops of
step 1 come before it (no ALE game scores during its first 30 frames).

Use :func:`make_atari_env` (an ALE id such as ``ALE/Pong-v5``; needs ``pip install
'shoal[atari]'``) or pass :class:`AtariEnv` as the env to ``shoal.train``:
``shoal.train("dqn", env=AtariEnv("ALE/Pong-v5"), steps=10_000_000)``. The wrappers
themselves need only Gymnasium and numpy (OpenCV is used for resizing when installed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, SupportsFloat

import gymnasium as gym
import numpy as np
import torch

from shoal.envs.episode_stats import EpisodeStats, carry_episode
from shoal.errors import EnvError

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _lives_of(env: gym.Env) -> Callable[[], int]:
    ale = getattr(env.unwrapped, "ale", None)
    if ale is None or not hasattr(ale, "lives"):
        raise EnvError(f"EpisodicLife needs an ALE env (env.unwrapped.ale.lives()), got {type(env.unwrapped).__name__}")
    return ale.lives


class NoopReset(gym.Wrapper):
    """After each reset, take a random number of no-op actions in ``[1, noop_max]``."""

    def __init__(self, env: gym.Env, noop_max: int = 30, noop_action: int = 0) -> None:
        super().__init__(env)
        if noop_max < 1:
            raise EnvError(f"noop_max must be >= 1, got {noop_max}")
        self.noop_max, self.noop_action = int(noop_max), int(noop_action)

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        for _ in range(int(self.np_random.integers(1, self.noop_max + 1))):
            obs, _, terminated, truncated, info = self.env.step(self.noop_action)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class MaxAndSkip(gym.Wrapper):
    """Repeat an action ``skip`` frames; reward is their sum, the observation the max of the last two frames."""

    def __init__(self, env: gym.Env, skip: int = 4) -> None:
        super().__init__(env)
        if skip < 1:
            raise EnvError(f"frame skip must be >= 1, got {skip}")
        self.skip = int(skip)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        total = 0.0
        last = prev = None
        terminated = truncated = False
        info: dict = {}
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            prev, last = last, obs
            total += float(reward)
            if terminated or truncated:
                break
        frame = last if prev is None or last is None else np.maximum(prev, last)
        return frame, total, terminated, truncated, info


class EpisodicLife(gym.Wrapper):
    """A lost life terminates the episode; the game resets only when it is really over.

    After a life is lost, ``reset`` continues the same game with one no-op step; a reset
    with a ``seed`` always starts a new game.
    """

    def __init__(self, env: gym.Env, noop_action: int = 0) -> None:
        super().__init__(env)
        self._lives_fn = _lives_of(env)
        self.noop_action = int(noop_action)
        self.lives = 0
        self.game_over = True

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = bool(terminated or truncated)
        lives = self._lives_fn()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        if self.game_over or kwargs.get("seed") is not None:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(self.noop_action)
            if terminated or truncated:
                obs, reset_info = self.env.reset(**kwargs)
                info = carry_episode(info, reset_info)
        self.game_over = False
        self.lives = self._lives_fn()
        return obs, info


class FireOnLifeLoss(gym.Wrapper):
    """The full game without :class:`EpisodicLife`: after a lost life, take the steps a life-loss reset takes in training.

    Those are a no-op and, as :class:`FireReset` presses them, FIRE and action 2; their
    rewards count in the step. A policy trained with life-loss resets never learned to
    press FIRE to relaunch a game that waits for it, so without this it would stall.
    """

    def __init__(self, env: gym.Env, noop_action: int = 0) -> None:
        super().__init__(env)
        self._lives_fn = _lives_of(env)
        self.noop_action = int(noop_action)
        self.lives = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        self.lives = self._lives_fn()
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self._lives_fn()
        if 0 < lives < self.lives and not (terminated or truncated):
            for extra in (self.noop_action, 1, 2):
                obs, r, terminated, truncated, info = self.env.step(extra)
                reward = float(reward) + float(r)
                if terminated or truncated:
                    break
        self.lives = self._lives_fn()
        return obs, reward, terminated, truncated, info


class FireReset(gym.Wrapper):
    """Press FIRE (then action 2) after a reset, for games that wait for it to start."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        meanings: list[str] = getattr(env.unwrapped, "get_action_meanings", lambda: [])()
        if len(meanings) < 3 or meanings[1] != "FIRE":
            raise EnvError(f"FireReset needs FIRE as action 1, but the actions are {meanings}")

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        for action in (1, 2):
            obs, _, terminated, truncated, step_info = self.env.step(action)
            if terminated or truncated:
                obs, reset_info = self.env.reset(**kwargs)
                info = carry_episode(step_info, reset_info)
        return obs, info


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights averaging the input cells each output cell covers (area resampling)."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    return (overlap / (hi - lo)).astype(np.float32)


class WarpFrame(gym.ObservationWrapper):
    """RGB frames to ``size x size`` uint8 luminance, resampled by pixel area."""

    def __init__(self, env: gym.Env, size: int = 84) -> None:
        super().__init__(env)
        shape = env.observation_space.shape
        if shape is None or len(shape) not in (2, 3):
            raise EnvError(f"WarpFrame needs image observations [H, W] or [H, W, C], got shape {shape}")
        self.size = int(size)
        # Resampling is two small matrix products, done by torch: numpy's BLAS may start a
        # thread per core for them, which on a busy machine costs 100x the arithmetic.
        self._rows = torch.from_numpy(_area_matrix(shape[0], self.size))
        self._cols = torch.from_numpy(_area_matrix(shape[1], self.size).T.copy())
        try:
            import cv2

            self._cv2: Any = cv2
        except ImportError:
            self._cv2 = None
        self.observation_space = gym.spaces.Box(0, 255, (self.size, self.size), np.uint8)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        if cv2 is not None and obs.dtype == np.uint8 and (obs.ndim == 2 or obs.shape[2] == 3):
            # uint8 all the way (OpenCV's fixed-point luma and area resampling): within one grey
            # level of the float path below, at a fraction of its cost.
            grey8 = cv2.cvtColor(obs, cv2.COLOR_RGB2GRAY) if obs.ndim == 3 else obs
            return cv2.resize(grey8, (self.size, self.size), interpolation=cv2.INTER_AREA)
        f = obs.astype(np.float32)
        grey = f[..., 0] * _LUMA[0] + f[..., 1] * _LUMA[1] + f[..., 2] * _LUMA[2] if obs.ndim == 3 else f
        if cv2 is not None:
            out = cv2.resize(grey, (self.size, self.size), interpolation=cv2.INTER_AREA)
        else:
            out = (self._rows @ torch.from_numpy(grey) @ self._cols).numpy()
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class ClipReward(gym.RewardWrapper):
    """Rewards clipped to their sign: -1, 0 or +1."""

    def reward(self, reward: SupportsFloat) -> float:
        return float(np.sign(float(reward)))


def wrap_atari(env: gym.Env, *, noop_max: int = 30, frame_skip: int = 4, episodic_life: bool = True,
               fire_reset: bool | None = None, size: int = 84, clip_rewards: bool = True,
               frame_stack: int = 4, max_episode_steps: int | None = None, episode_stats: bool = True) -> gym.Env:
    """Apply the DeepMind chain to an env that emits single RGB frames every frame (no frame skip of its own).

    ``fire_reset=None`` presses FIRE only in games whose action 1 is FIRE. ``0`` for
    ``noop_max``, ``frame_skip <= 1`` or ``frame_stack <= 1`` leaves that step out.
    ``max_episode_steps`` limits a whole game, in agent steps. ``episode_stats`` records
    the game's raw score and length, reported in ``info["episode"]`` when the game ends.
    """
    if noop_max > 0:
        env = NoopReset(env, noop_max)
    if frame_skip > 1:
        env = MaxAndSkip(env, frame_skip)
    if max_episode_steps:
        # Under EpisodicLife, so the limit is on the game (not on a life) and ends it.
        env = gym.wrappers.TimeLimit(env, max_episode_steps)
    if episode_stats:
        env = EpisodeStats(env)
    if episodic_life:
        env = EpisodicLife(env)
    if fire_reset is None:
        meanings = env.unwrapped.get_action_meanings() if hasattr(env.unwrapped, "get_action_meanings") else []
        fire_reset = len(meanings) >= 3 and meanings[1] == "FIRE"
    if fire_reset:
        if not episodic_life:
            env = FireOnLifeLoss(env)
        env = FireReset(env)
    env = WarpFrame(env, size)
    if clip_rewards:
        env = ClipReward(env)
    if frame_stack > 1:
        env = gym.wrappers.FrameStackObservation(env, frame_stack)
    return env


def make_atari_env(env_id: str, *, repeat_action_probability: float | None = None, full_action_space: bool = False,
                   max_episode_steps: int = 27_000, render_mode: str | None = None, **wrap_kwargs: Any) -> gym.Env:
    """An ALE game (e.g. ``ALE/Pong-v5``) with the DeepMind preprocessing of :func:`wrap_atari`.

    The ALE env is made with ``frameskip=1`` (skipping and max-pooling are the wrapper's);
    ``repeat_action_probability`` defaults to the id's own (0.25 sticky actions for v5 ids).
    ``max_episode_steps`` counts agent steps of a whole game (27k = 108k frames, the usual
    30-minute cap). ``render_mode="rgb_array"`` lets ``render()`` return the game's colour frames (for videos).
    """
    try:
        import ale_py
    except ImportError:
        raise EnvError(f"Atari env {env_id!r} needs ale-py; install it with: pip install 'shoal[atari]'") from None
    gym.register_envs(ale_py)
    kwargs: dict[str, Any] = {"frameskip": 1, "full_action_space": full_action_space}
    if repeat_action_probability is not None:
        kwargs["repeat_action_probability"] = repeat_action_probability
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as e:
        raise EnvError(f"cannot make Atari env {env_id!r} ({e}); use an ALE id such as ALE/Pong-v5") from None
    return wrap_atari(env, max_episode_steps=max_episode_steps, **wrap_kwargs)


@dataclass(frozen=True)
class AtariEnv:
    """A picklable factory of preprocessed ALE envs, to pass as ``env`` to ``shoal.train`` on any backend."""

    env_id: str
    """The ALE id, e.g. ALE/Breakout-v5."""
    episodic_life: bool = True
    """End training episodes at a lost life."""
    clip_rewards: bool = True
    """Clip rewards to their sign."""
    frame_stack: int = 4
    """Frames per observation."""
    repeat_action_probability: float | None = None
    """Sticky-action probability (None: the id's default)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "__name__", self.env_id)  # what run directories and metrics call it

    def for_evaluation(self) -> "AtariEnv":
        """The same game and preprocessing, played in full with its real rewards (no life loss ends, no clipping)."""
        return dataclasses.replace(self, episodic_life=False, clip_rewards=False)

    def __call__(self) -> gym.Env:
        return make_atari_env(self.env_id, episodic_life=self.episodic_life, clip_rewards=self.clip_rewards,
                              frame_stack=self.frame_stack, repeat_action_probability=self.repeat_action_probability)
