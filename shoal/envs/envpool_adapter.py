"""EnvPool behind shoal's vector-env contract (same-step autoreset, dense final observations).

EnvPool resets a finished copy on the *next* step; this adapter resets finished
copies at once (EnvPool's partial ``reset(env_ids)``) so the step that ends an
episode returns the new episode's first observation and ``final_obs`` holds the last.
Used with ``vector=envpool`` when EnvPool is installed (``pip install envpool``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from shoal.errors import EnvError


class EnvPoolVectorEnv(gym.vector.VectorEnv):
    """A Gymnasium ``VectorEnv`` over an EnvPool pool, same-step autoreset."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env_id: str, num_envs: int, seed: int | None = None, **kwargs: Any) -> None:
        try:
            import envpool
        except ImportError:
            raise EnvError("vector=envpool needs EnvPool; install it with: pip install envpool") from None
        try:
            self.pool = envpool.make_gymnasium(env_id, num_envs=num_envs, seed=0 if seed is None else int(seed), **kwargs)
        except Exception as e:  # EnvPool raises plain errors for unknown ids
            raise EnvError(f"EnvPool cannot make {env_id!r} ({e}); use vector=sync for this env") from None
        self.num_envs = num_envs
        self.single_observation_space = self.pool.observation_space
        self.single_action_space = self.pool.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._discrete = isinstance(self.single_action_space, gym.spaces.Discrete)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        obs, _ = self.pool.reset()
        return obs, {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        actions = np.asarray(actions, dtype=np.int32 if self._discrete else np.float32)
        obs, reward, terminated, truncated, _ = self.pool.step(actions)
        done = terminated | truncated
        infos: dict[str, Any] = {}
        if done.any():
            ids = np.flatnonzero(done).astype(np.int32)
            final = obs.copy()
            reset_obs, _ = self.pool.reset(ids)
            obs = obs.copy()
            obs[ids] = reset_obs
            infos = {"final_obs": final, "_final_obs": done}
        return obs, reward, terminated, truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        self.pool.close() if hasattr(self.pool, "close") else None


def make_envpool(env_id: str, num_envs: int, seed: int | None) -> EnvPoolVectorEnv:
    """An EnvPool-backed vector env for a Gymnasium id."""
    return EnvPoolVectorEnv(env_id, num_envs, seed)
