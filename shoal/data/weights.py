"""Importance weights for prioritized replay (their exponent is annealed by ``shoal.core.schedules``)."""

from __future__ import annotations

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
