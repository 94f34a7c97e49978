"""The tanh-squashed Gaussian's log-probability against change-of-variables references."""

from __future__ import annotations

import math

import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from shoal.agents.continuous.distributions import tanh_gaussian_log_prob, tanh_gaussian_sample, tanh_log_det_jacobian


def _cases() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    log_std = torch.empty(64, 3, dtype=torch.float64).uniform_(-2.0, 1.0, generator=gen)
    u = mean + log_std.exp() * torch.randn(64, 3, generator=gen, dtype=torch.float64)
    return mean, log_std, u


def test_log_prob_matches_gaussian_minus_log_det_of_autograd_jacobian() -> None:
    mean, log_std, u = _cases()
    ours = tanh_gaussian_log_prob(mean, log_std, u)
    for i in range(len(u)):
        jac = torch.autograd.functional.jacobian(torch.tanh, u[i])  # [3, 3], diagonal
        _, logabsdet = torch.linalg.slogdet(jac)
        ref = Normal(mean[i], log_std[i].exp()).log_prob(u[i]).sum() - logabsdet
        assert torch.allclose(ours[i], ref, atol=1e-9), (i, ours[i], ref)


def test_log_prob_matches_density_of_atanh_with_a_finite_difference_jacobian() -> None:
    # log p_A(a) = log p_U(atanh(a)) + sum_i log |d atanh(a_i) / d a_i|, the derivative by central differences.
    mean, log_std, u = _cases()
    a = torch.tanh(u)
    h = 1e-4 * (1 - a.abs())  # a step that stays inside (-1, 1) near the bounds
    datanh = (torch.atanh(a + h) - torch.atanh(a - h)) / (2 * h)
    ref = Normal(mean, log_std.exp()).log_prob(torch.atanh(a)).sum(-1) + datanh.abs().log().sum(-1)
    ours = tanh_gaussian_log_prob(mean, log_std, u)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


def test_log_prob_matches_torch_transformed_distribution() -> None:
    mean, log_std, u = _cases()
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    ref = dist.log_prob(torch.tanh(u)).sum(-1)
    assert torch.allclose(tanh_gaussian_log_prob(mean, log_std, u), ref, atol=1e-6)


def test_density_integrates_to_one_in_one_dimension() -> None:
    mean, log_std = torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([[-0.3]], dtype=torch.float64)
    a = torch.linspace(-1 + 1e-9, 1 - 1e-9, 400_001, dtype=torch.float64)
    u = torch.atanh(a).unsqueeze(-1)
    density = tanh_gaussian_log_prob(mean.expand(len(a), 1), log_std.expand(len(a), 1), u).exp()
    assert math.isclose(torch.trapezoid(density, a).item(), 1.0, abs_tol=1e-4)


def test_log_det_is_finite_where_tanh_saturates() -> None:
    u = torch.tensor([[30.0, -30.0, 0.0]])
    naive = torch.log(1 - torch.tanh(u) ** 2).sum(-1)
    assert torch.isinf(naive).all()
    ours = tanh_log_det_jacobian(u)
    assert torch.isfinite(ours).all()
    # log(1 - tanh(u)^2) = log(4) - 2|u| - 2 log(1 + exp(-2|u|)) -> 2 log 2 - 60 per saturated entry
    assert math.isclose(ours.item(), 2 * (2 * math.log(2) - 60.0), rel_tol=1e-6)


def test_sample_returns_the_log_prob_of_what_it_sampled_and_is_differentiable() -> None:
    mean = torch.randn(16, 2, requires_grad=True)
    log_std = torch.full((16, 2), -0.5, requires_grad=True)
    noise = torch.randn(16, 2)
    action, log_prob = tanh_gaussian_sample(mean, log_std, noise)
    u = mean + log_std.exp() * noise
    assert torch.allclose(action, torch.tanh(u))
    assert torch.allclose(log_prob, tanh_gaussian_log_prob(mean, log_std, u), atol=1e-5)
    assert (action.abs() < 1).all()
    (action.sum() + log_prob.sum()).backward()
    # The gradient flows through the sample into both parameters (reparameterised), and it is finite.
    assert torch.isfinite(mean.grad).all() and mean.grad.abs().sum() > 0
    assert torch.isfinite(log_std.grad).all() and log_std.grad.abs().sum() > 0
