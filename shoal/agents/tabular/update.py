"""The tabular update rules as small functions on a numpy Q-table (updated in place).

Each takes one transition ``(s, a, r, s', [a'], terminated)`` and returns the TD error.
A transition whose TD target is not finite (a NaN or inf reward) leaves the table as it
was and returns NaN: the caller counts it as a skipped update.
A terminated transition's target is ``r``; anything else (a time-limit truncation
included) bootstraps from ``s'``.
"""

from __future__ import annotations

import math

import numpy as np


def q_learning_update(q: np.ndarray, s: int, a: int, r: float, s2: int, terminated: bool, alpha: float, gamma: float) -> float:
    """``Q(s,a) += alpha (r + gamma max_a' Q(s',a') - Q(s,a))``; returns the TD error."""
    target = r if terminated else r + gamma * q[s2].max()
    if not math.isfinite(target):
        return math.nan
    delta = target - q[s, a]
    q[s, a] += alpha * delta
    return float(delta)


def sarsa_update(q: np.ndarray, s: int, a: int, r: float, s2: int, a2: int, terminated: bool, alpha: float, gamma: float) -> float:
    """``Q(s,a) += alpha (r + gamma Q(s',a') - Q(s,a))``; returns the TD error."""
    target = r if terminated else r + gamma * q[s2, a2]
    if not math.isfinite(target):
        return math.nan
    delta = target - q[s, a]
    q[s, a] += alpha * delta
    return float(delta)


def sarsa_lambda_update(q: np.ndarray, traces: np.ndarray, s: int, a: int, r: float, s2: int, a2: int, terminated: bool,
                        alpha: float, gamma: float, lam: float, kind: str = "accumulating") -> float:
    """One Sarsa(lambda) step over the whole table; returns the TD error.

    ``delta = r + gamma Q(s',a') - Q(s,a)``; the trace of (s, a) is bumped (``+= 1``
    accumulating, ``= 1`` replacing); ``Q += alpha delta e``; then ``e *= gamma lambda``.
    The caller zeroes ``traces`` at the start of each episode.
    """
    target = r if terminated else r + gamma * q[s2, a2]
    if not math.isfinite(target):
        return math.nan
    delta = target - q[s, a]
    if kind == "accumulating":
        traces[s, a] += 1.0
    elif kind == "replacing":
        traces[s, a] = 1.0
    else:
        raise ValueError(f"unknown trace kind {kind!r}; use accumulating or replacing")
    q += (alpha * delta) * traces
    traces *= gamma * lam
    return float(delta)
