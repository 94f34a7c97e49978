"""Environments: ``make_env`` for any Gymnasium id or callable, vector envs, wrappers.

Only this package knows Gymnasium details; the rest of shoal sees :class:`VecEnv`
(batched numpy in and out, same-step autoreset, ``final_obs`` dense).
"""

from shoal.envs.make import env_spec, make_env, make_vec_env, VecEnv
from shoal.nets.normalize import RunningMeanStd

__all__ = ["env_spec", "make_env", "make_vec_env", "VecEnv", "RunningMeanStd"]
