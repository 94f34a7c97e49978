"""The DQN family's math as pure tensor functions: targets, losses, priorities.

Transitions come from the n-step adder, so a target is always
``reward + discount * bootstrap`` where ``reward`` already sums ``m`` discounted rewards
and ``discount`` is ``gamma**m`` (0 when the episode terminated inside the window):
n-step returns need nothing beyond the adder's fields.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def q_learning_target(reward: torch.Tensor, discount: torch.Tensor, next_q_target: torch.Tensor) -> torch.Tensor:
    """DQN target ``r + discount * max_a Q_target(s', a)``; ``next_q_target`` is ``[B, A]``."""
    return reward + discount * next_q_target.max(dim=-1).values


def double_q_target(reward: torch.Tensor, discount: torch.Tensor, next_q_online: torch.Tensor,
                    next_q_target: torch.Tensor) -> torch.Tensor:
    """Double DQN target: the online net picks ``a* = argmax_a Q(s', a)``, the target net values it.

    ``r + discount * Q_target(s', a*)``.
    """
    best = next_q_online.argmax(dim=-1, keepdim=True)
    return reward + discount * next_q_target.gather(-1, best).squeeze(-1)


def huber(x: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Elementwise Huber function: ``x**2 / 2`` for ``|x| <= delta``, ``delta * (|x| - delta / 2)`` beyond."""
    a = x.abs()
    quad = a.clamp(max=delta)
    return 0.5 * quad * quad + delta * (a - quad)


def td_loss(q: torch.Tensor, target: torch.Tensor, kind: str = "huber", delta: float = 1.0,
            weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean TD loss over the batch and the TD errors ``target - q`` (detached).

    ``kind``: ``huber`` or ``mse`` (``(target - q)**2 / 2``). ``weights`` (importance
    weights of prioritized replay) scale each item's loss before the mean.
    """
    td = (target - q).detach()
    # torch's fused Huber (equal to ``huber`` above) keeps the autograd graph short.
    if weights is None:
        loss = F.huber_loss(q, target, delta=delta) if kind == "huber" else 0.5 * F.mse_loss(q, target)
        return loss, td
    per_item = F.huber_loss(q, target, reduction="none", delta=delta) if kind == "huber" else 0.5 * (target - q) ** 2
    return (per_item * weights).mean(), td


def priorities_from_td(td: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """New priorities for prioritized replay: ``|td| + eps``."""
    return td.abs() + eps


def dueling_aggregate(value: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """``Q = V + A - mean_a A``; ``value`` is ``[B]`` or ``[B, 1]``, ``advantages`` ``[B, A]``."""
    if value.dim() == advantages.dim() - 1:
        value = value.unsqueeze(-1)
    return value + advantages - advantages.mean(dim=-1, keepdim=True)
