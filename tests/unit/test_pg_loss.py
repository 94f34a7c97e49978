"""PPO clip and KL-penalty losses on a hand-computed batch, and the adaptive beta rule."""

import math

import pytest
import torch

from shoal.agents.pg.loss import adapt_kl_beta, ppo_clip_loss, ppo_kl_penalty_loss, value_loss
from shoal.nets import Categorical, DiagGaussian


def test_ppo_clip_loss_hand_computed():
    old = torch.log(torch.tensor([0.5, 0.5, 0.5]))
    new = torch.log(torch.tensor([0.75, 0.25, 0.55]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([1.0, -2.0, 3.0])
    loss, clip_frac = ppo_clip_loss(new, old, adv, 0.2)
    # min(1.5*1, 1.2*1) = 1.2 ; min(0.5*-2, 0.8*-2) = -1.6 ; min(1.1*3, 1.1*3) = 3.3
    assert loss.item() == pytest.approx(-(1.2 - 1.6 + 3.3) / 3, rel=1e-6)
    assert clip_frac.item() == pytest.approx(2 / 3)


def test_ppo_kl_penalty_loss_hand_computed():
    old = torch.log(torch.tensor([0.5, 0.5]))
    new = torch.log(torch.tensor([0.6, 0.4]))  # ratios 1.2, 0.8
    adv = torch.tensor([2.0, 1.0])
    kl = torch.tensor([0.1, 0.3])
    loss = ppo_kl_penalty_loss(new, old, adv, kl, beta=0.5)
    # -( (1.2*2 - .05) + (0.8*1 - .15) ) / 2 = -(2.35 + 0.65)/2 = -1.5
    assert loss.item() == pytest.approx(-1.5, rel=1e-6)


@pytest.mark.parametrize("kl,expected", [(0.001, 0.5), (0.006, 0.5), (0.007, 1.0), (0.01, 1.0), (0.015, 1.0), (0.016, 2.0)])
def test_adaptive_beta_rule(kl, expected):
    # target 0.01: halve below 0.00667, double above 0.015
    assert adapt_kl_beta(1.0, kl, 0.01) == expected


def test_categorical_kl_and_entropy_hand_computed():
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.25, 0.75]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert Categorical.kl(old, new).item() == pytest.approx(expected, rel=1e-6)
    assert Categorical.entropy(old).item() == pytest.approx(math.log(2), rel=1e-6)


def test_gaussian_log_prob_and_kl_against_torch_distributions():
    torch.manual_seed(0)
    mean, log_std = torch.randn(4, 3), torch.randn(4, 3) * 0.3
    params = torch.cat([mean, log_std], -1)
    x = torch.randn(4, 3)
    ref = torch.distributions.Normal(mean, log_std.exp())
    torch.testing.assert_close(DiagGaussian.log_prob(params, x), ref.log_prob(x).sum(-1))
    torch.testing.assert_close(DiagGaussian.entropy(params), ref.entropy().sum(-1))
    params2 = torch.cat([torch.randn(4, 3), torch.randn(4, 3) * 0.3], -1)
    m2, s2 = params2.chunk(2, -1)
    ref_kl = torch.distributions.kl_divergence(ref, torch.distributions.Normal(m2, s2.exp())).sum(-1)
    torch.testing.assert_close(DiagGaussian.kl(params, params2), ref_kl)


def test_categorical_sampling_frequencies():
    logits = torch.log(torch.tensor([0.1, 0.6, 0.3])).expand(20000, 3)
    s = Categorical.sample(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(s, minlength=3).float() / 20000
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.6, 0.3]), atol=0.015, rtol=0)


def test_value_loss_clipped():
    v = torch.tensor([2.0])
    old = torch.tensor([1.0])
    ret = torch.tensor([3.0])
    assert value_loss(v, ret).item() == pytest.approx(0.5)
    # clipped value 1.2 -> (1.2-3)^2 = 3.24 > 1, so the max is taken
    assert value_loss(v, ret, old, 0.2).item() == pytest.approx(0.5 * 3.24)
