"""The offline learners' math as pure tensor functions: behaviour-cloning losses and CQL(H) regularisers.

Shapes: ``B`` transitions, ``A`` discrete actions, ``d`` action dimensions, ``k`` critics,
``N`` sampled actions per state and proposal. Continuous actions are in ``[-1, 1]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from shoal.agents.continuous.distributions import tanh_gaussian_log_prob

#: Continuous dataset actions are pulled this far inside ``(-1, 1)`` before ``atanh``.
ATANH_EPS = 1e-6


def bc_discrete_loss(logits: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Behaviour cloning of discrete actions: ``mean_b -log softmax(logits_b)[a_b]``; ``logits`` ``[B, A]``."""
    return F.cross_entropy(logits, action.long())


def bc_nll_loss(mean: torch.Tensor, log_std: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Behaviour cloning by likelihood: ``mean_b -log pi(a_b | s_b)`` under the tanh-squashed Gaussian.

    ``action`` ``[B, d]`` in ``[-1, 1]`` is clamped to ``+-(1 - ATANH_EPS)`` so its pre-squash
    value ``atanh(a)`` is finite (actions clipped to the bounds sit exactly on them).
    """
    a = action.clamp(-1.0 + ATANH_EPS, 1.0 - ATANH_EPS)
    return -tanh_gaussian_log_prob(mean, log_std, torch.atanh(a)).mean()


def bc_mse_loss(mean: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Behaviour cloning by regression: ``mean_b sum_i (tanh(mean_bi) - a_bi)**2``, the bounded action to the data's."""
    return (torch.tanh(mean) - action).pow(2).sum(-1).mean()


def cql_discrete_regulariser(q_all: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """CQL(H) for discrete actions: ``mean_b [logsumexp_a Q(s_b, a) - Q(s_b, a_b)]``; ``q_all`` ``[B, A]``.

    It pushes Q down on all actions (softly, on the largest) and up on the dataset's, so
    actions the data never took are not overestimated (Kumar et al. 2020, eq. 4).
    """
    q_data = q_all.gather(1, action.long().unsqueeze(1)).squeeze(1)
    return (torch.logsumexp(q_all, dim=1) - q_data).mean()


def uniform_log_density(act_dim: int) -> float:
    """``log`` of the uniform density on ``[-1, 1]**act_dim``: ``act_dim * log(1/2)``."""
    return act_dim * math.log(0.5)


def cql_importance_logsumexp(q_uniform: torch.Tensor, q_current: torch.Tensor, log_pi_current: torch.Tensor,
                             q_next: torch.Tensor, log_pi_next: torch.Tensor, act_dim: int) -> torch.Tensor:
    """The importance-sampled ``log sum_a exp Q(s, a)`` of continuous CQL(H), per critic and state: ``[k, B]``.

    Each of the three proposals gives ``N`` actions per state: uniform on ``[-1, 1]**d``
    (``q_uniform``), the current policy at ``s`` (``q_current``, with ``log_pi_current``)
    and at ``s'`` (``q_next``, ``log_pi_next``), all evaluated as ``Q(s, a)``; Q values are
    ``[k, B, N]``, log-densities ``[B, N]``. Each sample is weighted by its own proposal,
    ``exp(Q(s, a_j) - log mu(a_j))``, and the ``3N`` weights are summed in log space, as in
    the authors' code (the paper's appendix F); the constant ``log 3N`` of the sample mean is
    left out there too, which moves the value, not its gradient.
    """
    uniform = q_uniform - uniform_log_density(act_dim)
    current = q_current - log_pi_current.unsqueeze(0)
    nxt = q_next - log_pi_next.unsqueeze(0)
    return torch.logsumexp(torch.cat([uniform, nxt, current], dim=-1), dim=-1)


def cql_plain_logsumexp(q_uniform: torch.Tensor, q_current: torch.Tensor, q_next: torch.Tensor) -> torch.Tensor:
    """``log sum_j exp Q(s, a_j)`` over the ``3N`` sampled actions with no density correction, per critic and state: ``[k, B]``.

    The authors' code's ``cql_importance_sample=False`` form (there with ``Q(s, a_data)`` in the
    sum too, left out here): every sample counts as much as any other, so ``Q`` is pushed down
    where the policy's own actions are, however narrow the policy (an importance weight
    ``1 / pi(a)`` all but ignores a policy that has collapsed onto a bound, where a tanh
    density is huge).
    """
    return torch.logsumexp(torch.cat([q_uniform, q_next, q_current], dim=-1), dim=-1)


def cql_continuous_regulariser(logsumexp_q: torch.Tensor, q_data: torch.Tensor) -> torch.Tensor:
    """CQL(H) gap per critic ``[k]``: ``mean_b logsumexp_q[i, b] - mean_b Q_i(s_b, a_b)``; inputs ``[k, B]``."""
    return logsumexp_q.mean(-1) - q_data.mean(-1)
