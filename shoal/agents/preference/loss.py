"""The Bradley-Terry preference loss and the ensemble's disagreement (Christiano et al. 2017).

A label ``mu`` is the probability that the first segment of a pair is preferred: 1 ("1"),
0 ("2") or 0.5 (equal). With predicted segment returns ``R1 = sum r(s, a)`` over segment 1
and ``R2`` over segment 2, the model's preference is

    P[seg1 > seg2] = exp(R1) / (exp(R1) + exp(R2)) = sigmoid(R1 - R2),

and the loss is the cross-entropy ``-(mu log P + (1 - mu) log(1 - P))``. ``response_noise``
``eps`` assumes a rater answers uniformly at random with probability ``eps`` (the paper uses
0.1): ``P' = (1 - eps) P + eps / 2``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def preference_probability(returns1: torch.Tensor, returns2: torch.Tensor) -> torch.Tensor:
    """``P[seg1 > seg2]`` under Bradley-Terry: ``exp(R1) / (exp(R1) + exp(R2))``, elementwise."""
    return torch.sigmoid(returns1 - returns2)


def bradley_terry_loss(returns1: torch.Tensor, returns2: torch.Tensor, labels: torch.Tensor,
                       response_noise: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of the labels ``mu`` (P[seg1 preferred]) under the model's preference.

    ``returns1``/``returns2``: predicted segment returns ``[..., N]``; ``labels``: ``[N]`` (broadcast).
    """
    logits = returns1 - returns2
    labels = labels.to(logits.dtype).expand_as(logits)
    if response_noise == 0.0:
        return F.binary_cross_entropy_with_logits(logits, labels)
    eps = float(response_noise)
    # log P' and log(1 - P') from log-sigmoids, stable for large |logits|.
    log_p = torch.logaddexp(math.log1p(-eps) + F.logsigmoid(logits), torch.full_like(logits, math.log(eps / 2)))
    log_q = torch.logaddexp(math.log1p(-eps) + F.logsigmoid(-logits), torch.full_like(logits, math.log(eps / 2)))
    return -(labels * log_p + (1 - labels) * log_q).mean()


def preference_disagreement(member_returns1: torch.Tensor, member_returns2: torch.Tensor) -> torch.Tensor:
    """Variance over the ensemble members ``[K, N]`` of each member's ``P[seg1 > seg2]``: ``[N]``."""
    probs = preference_probability(member_returns1, member_returns2)
    return probs.var(dim=0, unbiased=False)
