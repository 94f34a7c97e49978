"""Importance weights for prioritized replay and the schedule that anneals their exponent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shoal.errors import ConfigError


def importance_weights(probs: np.ndarray, size: int, beta: float) -> np.ndarray:
    """``w_i = (size * P(i)) ** -beta``, divided by the largest weight in the batch.

    ``probs`` are the sampling probabilities a prioritized table returned and ``size`` the
    number of items it held; dividing by the batch maximum keeps every weight in (0, 1].
    """
    probs = np.asarray(probs, dtype=np.float64)
    if size < 1 or not (probs > 0).all():
        raise ConfigError(f"importance weights need size >= 1 and positive probabilities, got size={size}, "
                          f"min prob={probs.min() if probs.size else None}; pass what the table's sample returned")
    w = (size * probs) ** (-float(beta))
    return (w / w.max()).astype(np.float32)


@dataclass(frozen=True)
class LinearSchedule:
    """A value moving linearly from ``start`` to ``end`` over ``steps`` steps, then staying at ``end``.

    For PER's beta: ``LinearSchedule(0.4, 1.0, total_steps)(step)``.
    """

    start: float
    """Value at step 0."""
    end: float
    """Value from ``steps`` on."""
    steps: int
    """Steps to go from start to end."""

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"schedule steps must be >= 0, got {self.steps}; pass the number of steps to anneal over")

    def __call__(self, step: int) -> float:
        if self.steps == 0:
            return float(self.end)
        frac = min(max(step / self.steps, 0.0), 1.0)
        return float(self.start + frac * (self.end - self.start))
