"""AlphaGo Zero's loss: (z - v)^2 - pi^T log p + c ||theta||^2."""

from __future__ import annotations

from typing import Iterable

import torch


def alphazero_loss(logits: torch.Tensor, values: torch.Tensor, pi: torch.Tensor, z: torch.Tensor,
                   params: Iterable[torch.Tensor], l2: float, value_coef: float = 1.0
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Batch-mean policy cross-entropy plus ``value_coef`` times value MSE, plus ``l2`` times the squared weights.

    ``logits [B, A]``, ``values [B]`` from the network; ``pi [B, A]`` search policies, ``z [B]``
    game outcomes for the side to move.
    """
    policy = -(pi * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
    value = (z - values).pow(2).mean()
    reg = torch.stack([p.pow(2).sum() for p in params]).sum()
    loss = policy + value_coef * value + l2 * reg
    return loss, {"policy_loss": policy.detach(), "value_loss": value.detach(), "l2_loss": reg.detach()}
