"""The tabular update rules as small functions on a numpy Q-table (updated in place).

Each takes one transition ``(s, a, r, s', [a'], terminated)`` and returns the TD error.
A terminated transition's target is ``r``; anything else (a time-limit truncation
included) bootstraps from ``s'``.
"""

from __future__ import annotations

import numpy as np


def schedule(start: float, end: float, kind: str, progress: float, decay: float = 1.0) -> float:
    """A value moving from ``start`` to ``end`` as ``progress`` (fraction of the run) grows.

    ``constant``: always ``start``. ``linear``: reaches ``end`` at ``progress = decay``
    and stays. ``exponential``: ``end + (start - end) * 0.01 ** (progress / decay)``.
    """
    if kind == "constant":
        return start
    if kind == "linear":
        return start + (end - start) * min(1.0, max(0.0, progress) / decay)
    if kind == "exponential":
        return end + (start - end) * 0.01 ** (max(0.0, progress) / decay)
    raise ValueError(f"unknown schedule {kind!r}; use constant, linear or exponential")


def q_learning_update(q: np.ndarray, s: int, a: int, r: float, s2: int, terminated: bool, alpha: float, gamma: float) -> float:
    """``Q(s,a) += alpha (r + gamma max_a' Q(s',a') - Q(s,a))``; returns the TD error."""
    target = r if terminated else r + gamma * q[s2].max()
    delta = target - q[s, a]
    q[s, a] += alpha * delta
    return float(delta)


def sarsa_update(q: np.ndarray, s: int, a: int, r: float, s2: int, a2: int, terminated: bool, alpha: float, gamma: float) -> float:
    """``Q(s,a) += alpha (r + gamma Q(s',a') - Q(s,a))``; returns the TD error."""
    target = r if terminated else r + gamma * q[s2, a2]
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
