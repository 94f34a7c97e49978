"""True episode returns through reward shaping and early ends: a wrapper that records them, and
the vector-side tracker that reports them.

Learning often sees a changed signal: clipped rewards, or episodes cut at each lost life
(Atari). What a run reports must still be the env's own return over its real episode.
:class:`EpisodeStats`, placed under the wrappers that change the signal, sums the rewards
it sees and, on the step where its episode really ends, puts ``info["episode"] = {"r":
return, "l": length}`` (the key and fields of Gymnasium's ``RecordEpisodeStatistics``,
which is read the same way). At reset it announces itself with ``info["episode_stats"]``,
so that a ``done`` without a report means "the learner's episode ended, the real one goes
on" rather than "this env reports nothing".

:class:`EpisodeTracker` turns a vector env's steps into :class:`EpisodeEnds`: for copies
whose env reports episodes, the reported figures; for the others, the sum of the rewards
the vector env returned (the learner's own episodes, as before).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

EPISODE_KEY = "episode"
"""The info key of a finished episode's ``{"r": return, "l": length}``."""
MARKER_KEY = "episode_stats"
"""The reset-info key by which an env says it reports its episodes in ``info["episode"]``."""


class EpisodeStats(gym.Wrapper):
    """Reports the return and length (in steps of the env it wraps) of each real episode.

    Place it under any wrapper that reshapes rewards or ends episodes early; the report
    comes in ``info["episode"]`` on the step where the wrapped env terminates or truncates.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._return = 0.0
        self._length = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        self._return, self._length = 0.0, 0
        return obs, {**info, MARKER_KEY: True}

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        self._length += 1
        if terminated or truncated:
            info = {**info, EPISODE_KEY: {"r": self._return, "l": self._length}}
        return obs, reward, terminated, truncated, info


def carry_episode(step_info: dict, reset_info: dict) -> dict:
    """``reset_info`` plus the episode report of ``step_info``, for wrappers that step inside ``reset``.

    A wrapper whose ``reset`` takes steps (FIRE, a no-op after a lost life) and resets again
    when one of them ends the episode would otherwise drop that episode's report.
    """
    if EPISODE_KEY in step_info:
        return {**reset_info, EPISODE_KEY: step_info[EPISODE_KEY]}
    return reset_info


@dataclass(frozen=True)
class EpisodeEnds:
    """The episodes that ended at one vector step."""

    index: np.ndarray
    """The env copies whose episode ended, ``[k]`` int."""
    returns: np.ndarray
    """Their undiscounted returns, ``[k]`` float64: the env's own where it reports them."""
    lengths: np.ndarray
    """Their lengths in steps, ``[k]`` int64."""


def _reported(info: Any, num_envs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(mask, returns, lengths)`` of the ``episode`` reports in a vectorised info dict, if any."""
    if not isinstance(info, dict):
        return None
    ep = info.get(EPISODE_KEY)
    if not isinstance(ep, dict) or "r" not in ep:
        return None
    mask = np.asarray(info.get("_" + EPISODE_KEY, np.ones(num_envs, bool)), dtype=bool)
    returns = np.asarray(ep["r"], dtype=np.float64).reshape(num_envs)
    lengths = np.asarray(ep.get("l", np.zeros(num_envs)), dtype=np.int64).reshape(num_envs)
    return mask, returns, lengths


class EpisodeTracker:
    """Per-copy episode accounting for a vector env with same-step autoreset.

    Copies whose env announced episode reports (``info["episode_stats"]`` at reset) end an
    episode only when a report arrives; the others at every ``terminated | truncated``,
    with the sum of the rewards stepped since their last end.
    """

    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs
        self.reports = np.zeros(num_envs, bool)  # copies whose env reports its own episodes
        self._return = np.zeros(num_envs, np.float64)
        self._length = np.zeros(num_envs, np.int64)

    def reset(self, info: dict) -> None:
        """Start every copy's episode afresh; ``info`` is the vector reset's info."""
        marker = info.get(MARKER_KEY)
        if marker is not None:
            self.reports |= np.asarray(marker, bool) & np.asarray(info.get("_" + MARKER_KEY, True), bool)
        self._return[:] = 0.0
        self._length[:] = 0

    def step(self, reward: np.ndarray, done: np.ndarray, info: dict) -> EpisodeEnds | None:
        """Account one vector step; the episodes it ended, or None."""
        self._return += reward
        self._length += 1
        if not done.any():
            return None
        returns, lengths = self._return.copy(), self._length.copy()
        got = np.zeros(self.num_envs, bool)
        # A report made during a reset (top level) is overridden by one from the ending step itself.
        for src in (info, info.get("final_info")):
            rep = _reported(src, self.num_envs)
            if rep is not None:
                mask = rep[0] & done
                returns[mask], lengths[mask] = rep[1][mask], rep[2][mask]
                got |= mask
        ended = got | (done & ~self.reports)
        self._return[done] = 0.0
        self._length[done] = 0
        if not ended.any():
            return None
        return EpisodeEnds(np.flatnonzero(ended), returns[ended], lengths[ended])
