"""V-trace off-policy targets (Espeholt et al. 2018, IMPALA, section 4.1), time-major ``[T, B]``."""

from __future__ import annotations

from typing import NamedTuple

import torch

from shoal.returns.core import _check, _reverse_scan


class VTraceReturns(NamedTuple):
    """``vs``: the V-trace value targets; ``pg_advantages``: the policy-gradient advantages."""

    vs: torch.Tensor
    pg_advantages: torch.Tensor


@torch.no_grad()
def vtrace(
    log_rhos: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    clip_rho_threshold: float | None = 1.0,
    clip_c_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    lambda_: float = 1.0,
) -> VTraceReturns:
    """V-trace targets for a behaviour policy ``mu`` and a target policy ``pi``.

    ``log_rhos[t] = log pi(a_t|x_t) - log mu(a_t|x_t)``; ``discounts[t] = gamma * (1 - terminated[t])``;
    ``values[t] = V(x_t)``, ``bootstrap_value = V(x_T)``. With ``rho_t = min(rho_bar, pi/mu)`` and
    ``c_t = lambda * min(c_bar, pi/mu)``::

        v_s - V(x_s) = rho_s (r_s + d_s V(x_{s+1}) - V(x_s)) + d_s c_s (v_{s+1} - V(x_{s+1}))
        pg_adv_s     = min(rho_pg_bar, pi/mu) (r_s + d_s v_{s+1} - V(x_s)),  v_T = V(x_T)

    A threshold of ``None`` means no clipping. No gradient flows through the results.
    """
    _check(rewards, discounts, bootstrap_value)
    for name, x in (("log_rhos", log_rhos), ("values", values)):
        if x.shape != rewards.shape:
            raise ValueError(f"{name} {tuple(x.shape)} must match rewards {tuple(rewards.shape)}")
    rhos = torch.exp(log_rhos)
    clipped_rhos = rhos if clip_rho_threshold is None else torch.clamp(rhos, max=clip_rho_threshold)
    cs = lambda_ * (rhos if clip_c_threshold is None else torch.clamp(rhos, max=clip_c_threshold))
    next_values = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
    deltas = clipped_rhos * (rewards + discounts * next_values - values)
    vs_minus_v = _reverse_scan(deltas, discounts * cs, torch.zeros_like(bootstrap_value))
    vs = vs_minus_v + values
    next_vs = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)], dim=0)
    pg_rhos = rhos if clip_pg_rho_threshold is None else torch.clamp(rhos, max=clip_pg_rho_threshold)
    pg_advantages = pg_rhos * (rewards + discounts * next_vs - values)
    return VTraceReturns(vs, pg_advantages)
