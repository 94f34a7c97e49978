"""Pure target and loss functions of DDPG, TD3, SAC and D4PG (tensors in, tensors out).

Shapes: ``B`` transitions, ``k`` critics, ``N`` atoms. Q values of a critic ensemble are ``[k, B]``
(a distributional critic's logits ``[B, N]``);
rewards, discounts, log-probabilities and importance weights are ``[B]``. ``discount``
is what the adder stored: ``gamma**m`` for an m-step window, 0 after termination.
"""

from __future__ import annotations

import torch


def smooth_target_action(target_action: torch.Tensor, noise: torch.Tensor, noise_clip: float) -> torch.Tensor:
    """TD3's target policy smoothing: ``clip(mu'(s') + clip(noise, -c, c), -1, 1)``.

    ``noise`` is already scaled by the smoothing std; actions live in ``[-1, 1]``.
    """
    return (target_action + noise.clamp(-noise_clip, noise_clip)).clamp(-1.0, 1.0)


def td_target(reward: torch.Tensor, discount: torch.Tensor, next_value: torch.Tensor) -> torch.Tensor:
    """``r + discount * V(s')`` (n-step reward and discount as stored by the adder)."""
    return reward + discount * next_value


def min_over_critics(q: torch.Tensor) -> torch.Tensor:
    """The clipped double-Q estimate: minimum over the critic axis of ``[k, B]`` (identity for k = 1)."""
    return q[0] if q.shape[0] == 1 else q.amin(0)


def soft_value(next_q: torch.Tensor, next_log_prob: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """SAC's soft state value ``Q(s', a') - alpha * log pi(a'|s')`` with ``a' ~ pi(.|s')``."""
    return next_q - alpha * next_log_prob


def critic_loss(q: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``0.5 * sum_i mean_b w_b (Q_i(s_b, a_b) - y_b)**2`` and the TD errors ``[k, B]``.

    ``weights`` are prioritized replay's importance weights (None: all 1).
    """
    td = q - target.detach()
    sq = td.pow(2)
    if weights is not None:
        sq = sq * weights
    return 0.5 * sq.mean(-1).sum(), td.detach()


def categorical_critic_loss(logits: torch.Tensor, target_probs: torch.Tensor,
                            weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """D4PG's critic loss ``mean_b w_b CE_b`` and the per-transition KL divergences ``KL_b`` ``[B]``.

    ``CE_b = -sum_i target_i log softmax(logits)_i`` between the projected target distribution
    (treated as a constant) and the critic's; ``weights`` are importance weights (None: all 1).
    The second value, ``KL_b = CE_b - H(target_b)``, is the transitions' new replay priority:
    the cross-entropy's gradient is the KL's, but its value carries the target's own entropy,
    a floor that differs from item to item and would rank items by how spread their target
    is rather than by how wrong the critic is (Rainbow prioritises by the KL).
    """
    target = target_probs.detach()
    ce = -(target * torch.log_softmax(logits, dim=-1)).sum(-1)
    weighted = ce * weights if weights is not None else ce
    entropy = -(target * torch.log(target.clamp_min(1e-12))).sum(-1)
    return weighted.mean(), (ce.detach() - entropy).clamp_min(0.0)


def dpg_actor_loss(q_pi: torch.Tensor) -> torch.Tensor:
    """Deterministic policy gradient loss ``-mean Q(s, mu(s))``."""
    return -q_pi.mean()


def sac_actor_loss(log_prob: torch.Tensor, q_pi: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """SAC's policy loss ``mean(alpha * log pi(a|s) - Q(s, a))`` with ``a`` reparameterised."""
    return (alpha * log_prob - q_pi).mean()


def sac_alpha_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """The temperature loss ``-mean(log_alpha * (log pi(a|s) + H_target))``.

    Its gradient in ``log_alpha`` is ``-mean(log pi + H_target) = entropy - H_target``, so
    gradient descent raises alpha while the entropy is below the target and lowers it above.
    """
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


def default_target_entropy(act_dim: int) -> float:
    """SAC's heuristic target entropy: ``-dim(A)``."""
    return -float(act_dim)
