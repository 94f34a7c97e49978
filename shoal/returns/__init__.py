"""Pure, batched, time-major return computations (``[T, B]`` tensors in, ``[T, B]`` out).

Conventions: ``discounts[t] = gamma * (1 - terminated[t])`` is the discount applied to
what follows step ``t``; a zero discount cuts the return at a termination. Values
are ``values[t] = V(s_t)`` and ``bootstrap_value = V(s_T)`` for the state after the
last step. Truncated episodes are handled by the caller: fold ``gamma * V(final_obs)``
into ``rewards[t]`` and set ``discounts[t] = 0`` (see :func:`fold_truncation`).
"""

from shoal.returns.core import (
    discounted_returns,
    fold_truncation,
    gae,
    n_step_targets,
    td_lambda,
)
from shoal.returns.vtrace import VTraceReturns, vtrace

__all__ = ["discounted_returns", "fold_truncation", "gae", "n_step_targets", "td_lambda", "vtrace", "VTraceReturns"]
