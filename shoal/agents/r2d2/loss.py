"""R2D2's math as pure, time-major tensor functions: value rescaling, n-step Double Q targets, priorities.

Sequences come from the :class:`~shoal.data.SequenceAdder`: timestep ``t`` holds ``obs[t]``,
``action[t]``, ``reward[t]`` and ``discount[t] = gamma * (1 - terminated)``; ``mask[t]`` is
True on real timesteps (a prefix of the sequence: windows are padded at the end only), and
the transition at ``t`` is trained on when ``mask[t + 1]`` is True. The n-step target of
``t`` bootstraps from ``j = min(t + n, last)``, ``last`` being the sequence's last real
timestep, so windows are shortened at the sequence's end; a termination's zero discount
cuts the return there, a truncation (``discount = gamma`` into the final observation)
bootstraps from the final observation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def value_rescale(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x`` (Pohlen et al. 2018)."""
    return torch.sign(x) * (torch.sqrt(x.abs() + 1.0) - 1.0) + eps * x


def inverse_value_rescale(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """The exact inverse of :func:`value_rescale`:
    ``sign(x) (((sqrt(1 + 4 eps (|x| + 1 + eps)) - 1) / (2 eps))**2 - 1)``."""
    root = (torch.sqrt(1.0 + 4.0 * eps * (x.abs() + 1.0 + eps)) - 1.0) / (2.0 * eps)
    return torch.sign(x) * (root * root - 1.0)


def trained_steps(mask: torch.Tensor) -> torch.Tensor:
    """``[T - 1, B]`` True where the transition at ``t`` is real (``mask[t + 1]``)."""
    return mask[1:].to(torch.bool)


def n_step_double_q_targets(reward: torch.Tensor, discount: torch.Tensor, mask: torch.Tensor,
                            q_online: torch.Tensor, q_target: torch.Tensor, n: int,
                            rescale_eps: float | None = 1e-3) -> torch.Tensor:
    """n-step Double Q targets ``[T - 1, B]`` for the transitions of sequences ``[T, B]``.

    ``target_t = h(sum_{k<m} (prod_{i<k} d_{t+i}) r_{t+k} + (prod_{i<m} d_{t+i}) h^-1(Q_target(s_j, a*)))``
    with ``j = t + m = min(t + n, last)`` and ``a* = argmax_a Q_online(s_j, a)``; ``q_online``
    and ``q_target`` are ``[T, B, A]``. ``rescale_eps=None`` leaves h out (plain targets).
    Entries of transitions that are not real (see :func:`trained_steps`) are meaningless.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    T = reward.shape[0]
    best = q_online.argmax(dim=-1, keepdim=True)
    boot = q_target.gather(-1, best).squeeze(-1)  # [T, B]
    if rescale_eps is not None:
        boot = inverse_value_rescale(boot, rescale_eps)
    last = mask.to(torch.int64).sum(dim=0) - 1  # [B]: the last real timestep
    t = torch.arange(T - 1, device=reward.device).unsqueeze(1)  # [T - 1, 1]
    end = torch.minimum(t + n, last.unsqueeze(0)).clamp(min=0)  # j per (t, b)
    ret = torch.zeros_like(reward[:-1])
    scale = torch.ones_like(reward[:-1])
    for k in range(n):
        idx = (t + k).clamp(max=T - 1).expand_as(ret)
        live = (t + k < end).to(reward.dtype)  # step t + k lies inside the window
        ret = ret + live * scale * reward.gather(0, idx)
        scale = torch.where(live.bool(), scale * discount.gather(0, idx), scale)
    g = ret + scale * boot.gather(0, end)
    return value_rescale(g, rescale_eps) if rescale_eps is not None else g


def sequence_priorities(td: torch.Tensor, valid: torch.Tensor, eta: float = 0.9, eps: float = 1e-6) -> torch.Tensor:
    """Per-sequence priorities ``eta * max_t |td| + (1 - eta) * mean_t |td| + eps`` over the valid timesteps.

    ``td`` and ``valid`` are ``[T, B]``; a sequence without valid timesteps gets ``eps``.
    """
    a = td.abs() * valid
    count = valid.sum(dim=0)
    mean = a.sum(dim=0) / count.clamp(min=1)
    return eta * a.max(dim=0).values + (1.0 - eta) * mean + eps


def sequence_td_loss(q: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, kind: str = "mse",
                     delta: float = 1.0, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean TD loss over the valid timesteps (each weighted by its sequence's importance weight) and the TD errors.

    ``q``, ``target`` and ``valid`` are ``[T, B]``, ``weights`` ``[B]``. ``kind``: ``mse``
    (``(target - q)**2 / 2``) or ``huber``. Returns ``(loss, td)`` with ``td = target - q``
    detached and zero where not valid.

    The mean runs over every valid timestep of the batch, so a sequence weighs by its number
    of real transitions (one cut short by its episode's end weighs less); Acme instead sums
    each sequence's steps and averages over the sequences, which differs by a constant
    factor only when no sequence is padded.
    """
    v = valid.to(q.dtype)
    per_step = (F.huber_loss(q, target, reduction="none", delta=delta) if kind == "huber"
                else 0.5 * (target - q) ** 2)
    per_step = per_step * v
    if weights is not None:
        per_step = per_step * weights.unsqueeze(0)
    loss = per_step.sum() / v.sum().clamp(min=1.0)
    return loss, ((target - q).detach() * v)
