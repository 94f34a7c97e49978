"""Targets and losses of DDPG, TD3 and SAC on hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shoal.agents.continuous.builder import ContinuousBuilder
from shoal.agents.continuous.config import SACConfig, TD3Config
from shoal.agents.continuous.loss import (
    critic_loss,
    default_target_entropy,
    dpg_actor_loss,
    min_over_critics,
    sac_actor_loss,
    sac_alpha_loss,
    smooth_target_action,
    soft_value,
    td_target,
)
from shoal.agents.continuous.targets import dpg_next_value
from shoal.envs.make import env_spec


def test_target_smoothing_clips_the_noise_then_the_action() -> None:
    mu = torch.tensor([0.9, -0.2, 0.0, -0.95])
    noise = torch.tensor([0.7, -0.3, -0.6, -0.2])
    out = smooth_target_action(mu, noise, noise_clip=0.5)
    # noise -> [0.5, -0.3, -0.5, -0.2]; sums [1.4, -0.5, -0.5, -1.15] -> clipped to [-1, 1]
    assert torch.allclose(out, torch.tensor([1.0, -0.5, -0.5, -1.0]))


def test_td3_next_value_uses_smoothed_target_action_and_min_of_target_critics() -> None:
    spec = env_spec("Pendulum-v1")
    cfg = TD3Config(hidden=(8,), target_noise=0.2, target_noise_clip=0.5)
    net = ContinuousBuilder(cfg, spec).make_networks()
    next_obs = torch.randn(32, 3)
    got = dpg_next_value(net, next_obs, 0.2, 0.5, torch.Generator().manual_seed(7))
    noise = torch.randn(32, 1, generator=torch.Generator().manual_seed(7)) * 0.2
    with torch.no_grad():
        a = (net.policy_target(next_obs) + noise.clamp(-0.5, 0.5)).clamp(-1, 1)
        q = net.critic_target(next_obs, a)
    assert q.shape == (2, 32)
    assert torch.allclose(got, torch.minimum(q[0], q[1]))
    # Large noise is clipped: every smoothed action stays within noise_clip of mu'(s') and inside [-1, 1].
    with torch.no_grad():
        mu = net.policy_target(next_obs)
        big = smooth_target_action(mu, torch.full_like(mu, 5.0), 0.5)
    assert ((big - mu) <= 0.5 + 1e-6).all() and (big <= 1.0).all()


def test_td_target_soft_value_and_min() -> None:
    r, d = torch.tensor([1.0, 2.0]), torch.tensor([0.9, 0.0])
    assert torch.allclose(td_target(r, d, torch.tensor([10.0, 10.0])), torch.tensor([10.0, 2.0]))
    q = torch.tensor([[1.0, 5.0], [3.0, 2.0]])
    assert torch.allclose(min_over_critics(q), torch.tensor([1.0, 2.0]))
    assert torch.allclose(min_over_critics(q[:1]), torch.tensor([1.0, 5.0]))
    assert torch.allclose(soft_value(torch.tensor([1.0]), torch.tensor([-2.0]), 0.5), torch.tensor([2.0]))


def test_critic_loss_hand_computed_with_importance_weights() -> None:
    q = torch.tensor([[1.0, 2.0], [0.0, 4.0]])
    y = torch.tensor([2.0, 2.0])
    loss, td = critic_loss(q, y)
    # 0.5 * (mean(1, 0) + mean(4, 4)) = 0.5 * (0.5 + 4) = 2.25
    assert loss.item() == pytest.approx(2.25)
    assert torch.allclose(td, torch.tensor([[-1.0, 0.0], [-2.0, 2.0]]))
    loss_w, _ = critic_loss(q, y, torch.tensor([1.0, 0.5]))
    # 0.5 * (mean(1, 0) + mean(4, 2)) = 0.5 * (0.5 + 3) = 1.75
    assert loss_w.item() == pytest.approx(1.75)


def test_actor_losses() -> None:
    assert dpg_actor_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)
    # mean(0.5 * [-1, -3] - [2, 4]) = mean([-2.5, -5.5]) = -4
    assert sac_actor_loss(torch.tensor([-1.0, -3.0]), torch.tensor([2.0, 4.0]), 0.5).item() == pytest.approx(-4.0)


@pytest.mark.parametrize("entropy, grows", [(-3.0, True), (1.0, False)])
def test_alpha_grows_when_entropy_is_below_target_and_shrinks_above(entropy: float, grows: bool) -> None:
    target_entropy = -1.0
    log_alpha = torch.zeros((), requires_grad=True)
    log_prob = torch.full((8,), -entropy)  # entropy estimate = -mean(log_prob)
    loss = sac_alpha_loss(log_alpha, log_prob, target_entropy)
    loss.backward()
    # d loss / d log_alpha = -mean(log_prob + target) = entropy - target
    assert log_alpha.grad.item() == pytest.approx(entropy - target_entropy)
    with torch.no_grad():
        log_alpha -= 0.1 * log_alpha.grad  # a gradient-descent step
    assert (log_alpha.item() > 0) == grows


def test_target_entropy_is_minus_action_dimension() -> None:
    assert default_target_entropy(6) == -6.0
    spec = env_spec("Pendulum-v1")
    b = ContinuousBuilder(SACConfig(hidden=(8,)), spec)
    learner = b.make_learner(b.make_networks(), b.make_tables())
    assert learner.target_entropy == -1.0
    b2 = ContinuousBuilder(SACConfig(hidden=(8,), target_entropy=-0.5), spec)
    assert b2.make_learner(b2.make_networks(), b2.make_tables()).target_entropy == -0.5


def test_sac_learner_step_raises_alpha_when_policy_entropy_is_too_low() -> None:
    """End to end through the learner: a nearly deterministic policy makes alpha grow."""
    spec = env_spec("Pendulum-v1")
    b = ContinuousBuilder(SACConfig(hidden=(16,), batch_size=32, alpha_lr=0.1), spec)
    net = b.make_networks()
    with torch.no_grad():  # log-std head bias very negative -> entropy far below -1
        net.policy.net[-1].bias[1:] = -15.0
    tables = b.make_tables()
    learner = b.make_learner(net, tables)
    rng = np.random.default_rng(0)
    tables["replay"].insert({"obs": rng.standard_normal((64, 3), dtype=np.float32),
                             "action": rng.uniform(-1, 1, (64, 1)).astype(np.float32),
                             "reward": rng.standard_normal(64, dtype=np.float32),
                             "discount": np.full(64, 0.99, np.float32),
                             "next_obs": rng.standard_normal((64, 3), dtype=np.float32)})
    before = net.log_alpha.item()
    m = learner.step()
    assert float(m["entropy"]) < -1.0
    assert net.log_alpha.item() > before
