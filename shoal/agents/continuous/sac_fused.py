"""SAC's gradient step with hand-written gradients, for ReLU networks.

The same losses as :class:`~shoal.agents.continuous.learner.SACLearner`'s autograd path
(the critic loss, the policy loss through the critics with detached weights, the
temperature loss; one set of gradients per step), with every gradient derived by hand and
written straight into the networks' flat gradient buffers. No autograd graph is built,
and the large intermediate tensors live in a :class:`~shoal.agents.continuous.fused.Workspace`
reused from step to step, except those of the products that run in oneDNN
(:data:`~shoal.agents.continuous.fused.ONEDNN`). Tested against plain autograd of the same losses, gradient by
gradient (including where the log-std clamp is active).

The policy's gradient, for ``u = mean + exp(log_std) * noise``, ``a = tanh(u)`` and
``log pi(a|s) = sum(-noise**2 / 2 - log_std - log(2 pi) / 2) - sum(2 (log 2 - u - softplus(-2u)))``:
``d log pi / du = 2 tanh(u) = 2a`` and ``d log pi / d log_std = -1`` (the noise is fixed), so
``dL/du = dL/da (1 - a**2) + 2 alpha a / B`` and ``dL/d log_std = dL/du * (u - mean) - alpha / B``,
where ``L = mean_b(alpha log pi - min_i Q_i)`` and ``dL/da`` comes back through the critics.
"""

from __future__ import annotations

from typing import Sequence

import torch

from shoal.agents.continuous.distributions import tanh_gaussian_sample
from shoal.agents.continuous.fused import Workspace, ensemble_backward, ensemble_forward, mlp_backward, mlp_forward
from shoal.agents.continuous.loss import critic_loss, min_over_critics, sac_actor_loss, soft_value, td_target
from shoal.agents.continuous.networks import ContinuousNetworks
from shoal.core.device import randn
from shoal.nets.heads import LOG_STD_MAX, LOG_STD_MIN


def supports(net: ContinuousNetworks) -> bool:
    """True when ``net``'s policy and critics are ReLU MLPs (what the hand-written gradients cover)."""
    return net.stochastic and net.critic.relu and net.policy.linears is not None


class FusedSACStep:
    """One SAC gradient computation on ``net``: losses and metrics out, gradients into the parameters' ``.grad``.

    The parameters' ``.grad`` must exist (views of :class:`~shoal.nets.optim.FlatParams`
    buffers); the critics' and the policy's are overwritten, not accumulated.
    """

    def __init__(self, net: ContinuousNetworks) -> None:
        if not supports(net):
            raise ValueError("FusedSACStep needs SAC networks whose policy and critics are ReLU MLPs")
        self.net = net
        self.buf = Workspace()

    @staticmethod
    def _params(layers: Sequence[torch.nn.Module]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return [m.weight for m in layers], [m.bias for m in layers]  # type: ignore[misc]

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor,
                 next_obs: torch.Tensor, weights: torch.Tensor | None, alpha: torch.Tensor, gen: torch.Generator,
                 policy_step: bool, target_entropy: float | None
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
        """``(critic metrics, TD errors [k, B], policy metrics)``; ``target_entropy=None``: no temperature gradient.

        ``obs`` and ``next_obs`` are normalised; the policy metrics are empty unless ``policy_step``.
        """
        net, buf = self.net, self.buf
        n, act_dim = obs.shape[0], net.act_dim
        assert net.policy.linears is not None
        cws, cbs = self._params(list(net.critic.layers))
        tws, tbs = self._params(list(net.critic_target.layers))
        pws, pbs = self._params(net.policy.linears)

        # Target: y = r + discount * (min_i Q'_i(s', a') - alpha log pi(a'|s')). Every critic pass
        # below uses the same buffers ("c"), as do both policy passes ("p"): each pass is done with
        # them before the next starts, and the few buffers stay in cache.
        out, _ = mlp_forward(next_obs, pws, pbs, buf, "p")
        mean, log_std = out[:, :act_dim], out[:, act_dim:].clamp(LOG_STD_MIN, LOG_STD_MAX)
        next_action, next_log_prob = tanh_gaussian_sample(mean, log_std, randn(mean.shape, gen, mean.device))
        next_q, _ = ensemble_forward(torch.cat([next_obs, next_action], -1), tws, tbs, buf, "c")
        y = td_target(reward, discount, soft_value(min_over_critics(next_q.squeeze(-1)), next_log_prob, alpha))

        # Critic loss 0.5 * sum_i mean_b w_b (Q_i - y)^2: dL/dQ_i = w_b (Q_i - y) / B.
        q_out, hs = ensemble_forward(torch.cat([obs, action], -1), cws, cbs, buf, "c")
        q = q_out.squeeze(-1)
        loss, td = critic_loss(q, y, weights)
        grad_q = td / n if weights is None else td * (weights / n)
        ensemble_backward(grad_q.unsqueeze(-1), hs, cws, [w.grad for w in cws], [b.grad for b in cbs], False, buf, "c")
        metrics = {"loss_critic": loss, "q": q.mean(), "alpha": alpha}
        if not policy_step:
            return metrics, td, {}

        # Policy loss mean_b(alpha log pi(a|s) - min_i Q_i(s, a)), a reparameterised.
        out, hp = mlp_forward(obs, pws, pbs, buf, "p")
        mean, raw_log_std = out[:, :act_dim], out[:, act_dim:]
        log_std = raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        noise = randn(mean.shape, gen, mean.device)
        a, log_prob = tanh_gaussian_sample(mean, log_std, noise)
        q_pi_out, hq = ensemble_forward(torch.cat([obs, a], -1), cws, cbs, buf, "c")
        q_pi = q_pi_out.squeeze(-1)
        q_min = min_over_critics(q_pi)
        loss_pi = sac_actor_loss(log_prob, q_min, alpha)
        # d(-mean_b min_i Q_i)/dQ_i: -1/B on the minimum (shared among ties, as amin's gradient is).
        if q_pi.shape[0] == 1:
            grad_q_pi = torch.full_like(q_pi, -1.0 / n)
        else:
            is_min = (q_pi == q_min).to(q_pi.dtype)
            grad_q_pi = is_min * (-1.0 / n / is_min.sum(0))
        grad_x = ensemble_backward(grad_q_pi.unsqueeze(-1), hq, cws, [None] * len(cws), [None] * len(cbs), True,
                                   buf, "c")
        assert grad_x is not None
        grad_u = grad_x[:, -act_dim:] * (1.0 - a * a) + (2.0 / n) * alpha * a
        grad_log_std = (grad_u * (log_std.exp() * noise) - alpha / n) * (
            (raw_log_std >= LOG_STD_MIN) & (raw_log_std <= LOG_STD_MAX))
        mlp_backward(torch.cat([grad_u, grad_log_std], -1), hp, pws, [w.grad for w in pws], [b.grad for b in pbs],
                     False, buf, "p")
        log_alpha = net.log_alpha
        if target_entropy is not None and log_alpha is not None:
            # d/d log_alpha of -mean(log_alpha * (log pi + H_target)).
            assert log_alpha.grad is not None
            log_alpha.grad.copy_(-(log_prob + target_entropy).mean())
        return metrics, td, {"loss_actor": loss_pi, "entropy": -log_prob.mean()}
