"""Making single and vector environments, and describing them with an :class:`EnvSpec`."""

from __future__ import annotations

import difflib
import math
import multiprocessing
from typing import Any, Callable, cast

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from shoal.core.types import EnvSpec, StepResult
from shoal.envs.episode_stats import EpisodeTracker
from shoal.envs.ids import bare_env_id, import_env_module, split_env_id
from shoal.envs.registration import register_envs
from shoal.envs.watchdog import EnvHung
from shoal.errors import EnvError

EnvLike = str | Callable[[], gym.Env]
VECTOR_MODES = ("auto", "sync", "async", "batched", "envpool")


class NonFiniteEnvOutput(EnvError):
    """An env returned a NaN or inf observation or reward (its own dynamics, not shoal's)."""


def check_env_id(env_id: str) -> str:
    """The registered id for ``env_id`` (``module:`` prefix imported and dropped), or a one-line :class:`EnvError`."""
    register_envs()
    from shoal.envs.games import is_game

    if is_game(env_id):
        raise EnvError(f"{env_id!r} is a two-player board game, which only alphazero trains on; "
                       f"run: shoal train alphazero --env {env_id}")
    module = split_env_id(env_id)[0]
    env_id = import_env_module(env_id)
    if env_id in gym.registry:
        return env_id
    if module is not None:
        raise EnvError(f"importing {module!r} did not register {env_id!r}; call gymnasium.register(id={env_id!r}, ...) "
                       "in that module, or fix the id")
    if env_id.startswith("ALE/") or "NoFrameskip" in env_id:
        try:
            import ale_py  # noqa: F401  (registers the Atari ids)

            gym.register_envs(ale_py)
            if env_id in gym.registry:
                return env_id
        except ImportError:
            raise EnvError(f"Atari env {env_id!r} needs ale-py; install it with: pip install 'shoal[atari]'") from None
    close = difflib.get_close_matches(env_id, list(gym.registry), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "run `shoal list` or see gymnasium's registry for valid ids"
    raise EnvError(f"unknown environment id {env_id!r}; {hint}")


def _atari(env: EnvLike) -> EnvLike:
    """ALE ids get the standard Atari preprocessing (``shoal.envs.atari``)."""
    if isinstance(env, str) and env.startswith("ALE/"):
        check_env_id(env)
        from shoal.envs.atari import AtariEnv

        return AtariEnv(env)
    return env


def make_env(env: EnvLike, **kwargs: Any) -> gym.Env:
    """A single Gymnasium env from an id (any registered id, shoal's included) or a callable.

    ``ALE/...`` ids come with the DQN-paper Atari preprocessing (84x84 grey, frame
    stack, frame skip with max-pool, noop and fire reset, episodic life, reward clipping);
    the episode returns shoal reports for them are still the raw scores of whole games.
    """
    env = _atari(env)
    if callable(env):
        made = env()
        if not isinstance(made, gym.Env):
            raise EnvError(f"env factory returned {type(made).__name__}, not a gymnasium.Env; return gym.make(...) or an Env subclass")
        return made
    try:
        return gym.make(check_env_id(env), **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise EnvError(f"env {env!r} needs an extra dependency ({e}); e.g. pip install 'shoal[mujoco]'") from None


def env_id_of(env: EnvLike) -> str:
    """A printable id for an env id or factory."""
    return env if isinstance(env, str) else getattr(env, "__name__", "custom")


def spec_from_spaces(env_id: str, obs_space: gym.Space, act_space: gym.Space) -> EnvSpec:
    """Describe an env from its single-copy spaces."""
    num_obs_states = None
    obs_shape: tuple[int, ...]
    if isinstance(obs_space, gym.spaces.Discrete):
        num_obs_states = int(obs_space.n)
        obs_shape, obs_dtype = (), np.dtype(np.int64)
    elif isinstance(obs_space, gym.spaces.Box):
        obs_shape, obs_dtype = tuple(obs_space.shape), np.dtype(obs_space.dtype)
    else:
        raise EnvError(f"env {env_id!r} has observation space {obs_space}; shoal supports Box and Discrete (flatten others with a wrapper)")
    if isinstance(act_space, gym.spaces.Discrete):
        return EnvSpec(env_id, obs_shape, obs_dtype, True, int(act_space.n), num_obs_states=num_obs_states)
    if isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
        return EnvSpec(env_id, obs_shape, obs_dtype, False, int(act_space.shape[0]),
                       np.asarray(act_space.low, np.float32), np.asarray(act_space.high, np.float32),
                       num_obs_states=num_obs_states)
    raise EnvError(f"env {env_id!r} has action space {act_space}; shoal supports Discrete and 1-D Box actions")


def env_spec(env: EnvLike) -> EnvSpec:
    """The :class:`EnvSpec` of an env id or factory (builds one copy and closes it)."""
    e = make_env(env)
    try:
        return spec_from_spaces(env_id_of(env), e.observation_space, e.action_space)
    finally:
        e.close()


class VecEnv:
    """A batch of env copies with same-step autoreset, dense ``final_obs`` and sanity checks.

    Wraps a Gymnasium ``VectorEnv``. Each step is checked: observations must have the
    declared shape and, like rewards, be finite; otherwise an :class:`EnvError` says which.

    A step where episodes ended carries them in ``extras["episodes"]``
    (:class:`~shoal.envs.episode_stats.EpisodeEnds`): the env's own return and length of
    its real episode where it reports them (``info["episode"]``, e.g. from
    :class:`~shoal.envs.episode_stats.EpisodeStats` under Atari's life loss and reward
    clipping), otherwise the sum of the rewards returned since the copy's last end.
    """

    def __init__(self, env: gym.vector.VectorEnv, env_id: str, check: bool = True) -> None:
        self.env = env
        self.env_id = env_id
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.spec = spec_from_spaces(env_id, env.single_observation_space, env.single_action_space)
        self.check = check
        self._obs_shape = (self.num_envs, *self.spec.obs_shape)
        self._discrete = isinstance(env.single_action_space, gym.spaces.Discrete)
        self._float_obs = np.dtype(self.spec.obs_dtype).kind == "f"
        self._obs: np.ndarray | None = None
        self._episodes = EpisodeTracker(self.num_envs)

    @property
    def obs(self) -> np.ndarray:
        """The current observations (after the last reset or step)."""
        assert self._obs is not None, "reset the env first"
        return self._obs

    def _check_obs(self, obs: np.ndarray, what: str) -> np.ndarray:
        obs = np.asarray(obs)
        if obs.shape != self._obs_shape:
            raise EnvError(f"env {self.env_id!r} returned {what} of shape {obs.shape}, expected {self._obs_shape}; "
                           "fix the env's observation_space or its step()")
        if obs.dtype.kind == "f" and not np.isfinite(obs).all():
            raise NonFiniteEnvOutput(f"env {self.env_id!r} returned a non-finite {what} (NaN or inf); "
                                     "check the env's dynamics or add a wrapper that clips it")
        return obs

    def reset(self, seed: int | None = None, timeout: float | None = None) -> np.ndarray:
        """Reset every copy; copy ``i`` is seeded with ``seed + i``.

        ``timeout``: as :meth:`step`'s (copies in worker processes only): a reset not done by then raises
        :class:`~shoal.envs.watchdog.EnvHung`; then close the env with ``terminate=True``.
        """
        if timeout is not None and self.in_subprocesses:
            workers = cast(gym.vector.AsyncVectorEnv, self.env)
            workers.reset_async(seed=seed)
            try:
                obs, info = workers.reset_wait(timeout=timeout)
            except multiprocessing.TimeoutError:
                raise EnvHung(f"reset did not return within {timeout:g} s (env_step_timeout)") from None
        else:
            obs, info = self.env.reset(seed=seed)
        self._episodes.reset(info)
        self._obs = self._check_obs(obs, "observation") if self.check else obs
        return self._obs

    @property
    def in_subprocesses(self) -> bool:
        """Whether the copies run in worker processes (Gymnasium's ``AsyncVectorEnv``, ``vector=async``)."""
        return isinstance(self.env, gym.vector.AsyncVectorEnv)

    def step(self, actions: np.ndarray, timeout: float | None = None) -> StepResult:
        """Step every copy; ended copies are reset in the same call.

        ``timeout`` (seconds; copies in worker processes only, see :attr:`in_subprocesses`): a
        step not done by then raises :class:`~shoal.envs.watchdog.EnvHung`; then close the env
        with ``terminate=True``.
        """
        if self._discrete:
            actions = np.asarray(actions, dtype=np.int64)
        try:
            if timeout is not None and self.in_subprocesses:
                workers = cast(gym.vector.AsyncVectorEnv, self.env)
                workers.step_async(actions)
                try:
                    obs, reward, terminated, truncated, info = workers.step_wait(timeout=timeout)
                except multiprocessing.TimeoutError:
                    raise EnvHung(f"step did not return within {timeout:g} s (env_step_timeout)") from None
            else:
                obs, reward, terminated, truncated, info = self.env.step(actions)
        except ValueError as e:
            if "shape" in str(e) or "stack" in str(e):
                raise EnvError(f"env {self.env_id!r} returned an observation that does not match its observation_space "
                               f"{self.single_observation_space} ({e}); fix the env's step() or its space") from None
            raise
        reward = np.asarray(reward, dtype=np.float32)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        done = terminated | truncated
        final_obs = obs
        if done.any():
            final_obs = _dense_final_obs(info, obs, done)
        if self.check:
            if obs.shape != self._obs_shape:
                self._check_obs(obs, "observation")
            # One float64 sum per array is finite exactly when every element is (NaN and inf
            # propagate; float32 values cannot overflow a float64 sum): cheaper than isfinite().all().
            if not math.isfinite(float(reward.sum(dtype=np.float64))
                                 + (float(obs.sum(dtype=np.float64)) if self._float_obs else 0.0)):
                self._check_obs(obs, "observation")  # the slow check, element by element: finite values may overflow a sum
                bad = reward[~np.isfinite(reward)]
                if bad.size:
                    raise NonFiniteEnvOutput(f"env {self.env_id!r} returned a non-finite reward {bad[0]}; "
                                             "check the env's reward function")
            if done.any():
                self._check_obs(final_obs, "final observation")
        self._obs = obs
        result = StepResult(obs, reward, terminated, truncated, final_obs)
        ended = self._episodes.step(reward, done, info)
        if ended is not None:
            result.extras["episodes"] = ended
        return result

    def close(self, terminate: bool = False) -> None:
        """Close every copy; ``terminate``: kill worker processes instead of asking them (one may hang)."""
        if terminate and self.in_subprocesses:
            self.env.close(terminate=True)
        else:
            self.env.close()


def _dense_final_obs(info: dict, obs: np.ndarray, done: np.ndarray) -> np.ndarray:
    fo = info.get("final_obs")
    if fo is None:
        raise EnvError("vector env did not report final observations; it must use same-step autoreset")
    if isinstance(fo, np.ndarray) and fo.dtype != object:
        return fo
    out = np.array(obs, copy=True)
    for i in np.flatnonzero(done):
        out[i] = fo[i]
    return out


def _batched_twin(env_id: str) -> str | None:
    """The ``shoal/`` batched id for ``env_id`` (itself if it is one), or None."""
    try:
        from shoal.envs.batched import BATCHED_IDS
    except ImportError:
        return None
    from shoal.envs.registration import PARTIAL_IDS

    env_id = bare_env_id(env_id)
    if env_id in PARTIAL_IDS:
        return env_id
    if env_id in BATCHED_IDS:
        return BATCHED_IDS[env_id]
    return env_id if env_id in BATCHED_IDS.values() else None


def make_vec_env(env: EnvLike, num_envs: int, seed: int | None = None, mode: str = "auto", check: bool = True,
                 env_kwargs: dict[str, Any] | None = None, reset: bool = True) -> VecEnv:
    """A :class:`VecEnv` of ``num_envs`` copies, reset with ``seed`` (copy i gets ``seed + i``; with
    ``reset=False`` not yet: the caller resets it, e.g. with a deadline).

    ``mode``: ``sync`` (one process), ``async`` (a process per copy), ``batched``
    (shoal's numpy-vectorised envs with Gymnasium's exact dynamics), ``envpool``, or
    ``auto`` (batched where such a twin exists, sync otherwise).
    """
    if mode not in VECTOR_MODES:
        raise EnvError(f"unknown vector mode {mode!r}; use one of {VECTOR_MODES}")
    env = _atari(env)
    if num_envs < 1:
        raise EnvError(f"num_envs must be >= 1, got {num_envs}")
    env_id = env_id_of(env)
    kwargs = env_kwargs or {}
    if isinstance(env, str):
        env = check_env_id(env)
        if mode == "auto":
            # Classic-control ids have numpy-batched twins with Gymnasium's exact dynamics
            # (tested step for step): same env, one call for all copies.
            mode = "batched" if _batched_twin(env) and not kwargs else "sync"
        if mode == "batched":
            twin = _batched_twin(env)
            if twin is None or kwargs:
                raise EnvError(f"no batched version of {env!r}{' with env_kwargs' if kwargs else ''}; use vector=sync")
            vec = gym.make_vec(twin, num_envs=num_envs, vectorization_mode="vector_entry_point")
        elif mode == "envpool":
            from shoal.envs.envpool_adapter import make_envpool

            vec = make_envpool(env, num_envs, seed)
        else:
            vec = gym.make_vec(env, num_envs=num_envs, vectorization_mode=mode,
                               vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **kwargs)
    else:
        fns = [lambda: make_env(env)] * num_envs
        cls = gym.vector.AsyncVectorEnv if mode == "async" else gym.vector.SyncVectorEnv
        vec = cls(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    if vec.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP) != AutoresetMode.SAME_STEP:
        raise EnvError(f"vector env for {env_id!r} does not use same-step autoreset; shoal needs AutoresetMode.SAME_STEP")
    out = VecEnv(vec, env_id, check=check)
    if reset:
        out.reset(seed=seed)
    return out
