"""Environments: ``make_env`` for any Gymnasium id or callable, vector envs, wrappers.

Only this package knows Gymnasium details; the rest of shoal sees :class:`VecEnv`
(batched numpy in and out, same-step autoreset, ``final_obs`` dense). The names below
load on first use, so that ``import shoal`` (which registers shoal's env ids through
:mod:`shoal.envs.registration`) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real names, for type checkers; at run time they load on first use
    from shoal.envs.make import VecEnv, env_spec, make_env, make_vec_env
    from shoal.nets.normalize import RunningMeanStd

_LAZY = {
    "env_spec": "shoal.envs.make",
    "make_env": "shoal.envs.make",
    "make_vec_env": "shoal.envs.make",
    "VecEnv": "shoal.envs.make",
    "RunningMeanStd": "shoal.nets.normalize",
    "EpisodeStats": "shoal.envs.episode_stats",
    "EpisodeEnds": "shoal.envs.episode_stats",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'shoal.envs' has no attribute {name!r}")


__all__ = ["env_spec", "make_env", "make_vec_env", "VecEnv", "RunningMeanStd", "EpisodeStats", "EpisodeEnds"]
