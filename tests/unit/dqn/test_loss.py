"""DQN-family math against hand-computed numbers."""

import numpy as np
import pytest
import torch

from shoal.agents.dqn.loss import double_q_target, dueling_aggregate, huber, priorities_from_td, q_learning_target, td_loss
from shoal.core.types import StepResult
from shoal.data import NStepTransitionAdder, importance_weights

T = torch.tensor


def test_dqn_target_takes_max_of_target_net():
    reward, discount = T([1.0, 0.5]), T([0.99, 0.0])
    next_q = T([[1.0, 3.0], [2.0, -1.0]])
    assert torch.allclose(q_learning_target(reward, discount, next_q), T([1.0 + 0.99 * 3.0, 0.5]))


def test_double_dqn_target_argmax_online_evaluate_target():
    reward, discount = T([1.0, 0.5]), T([0.99, 0.9])
    online = T([[5.0, 1.0], [0.0, 2.0]])  # picks actions 0 and 1
    target = T([[1.0, 3.0], [2.0, -1.0]])  # a plain max would take 3 and 2
    assert torch.allclose(double_q_target(reward, discount, online, target), T([1.0 + 0.99 * 1.0, 0.5 - 0.9]))


def _nstep_items(rewards, n, gamma, terminate_at=None):
    adder = NStepTransitionAdder(n, gamma)
    adder.add_first(np.zeros((1, 1), np.float32))
    for t, r in enumerate(rewards):
        term = terminate_at is not None and t == terminate_at
        obs = np.full((1, 1), t + 1, np.float32)
        adder.add(np.array([0]), StepResult(obs, np.array([r], np.float32), np.array([term]), np.array([False]), obs))
        if term:
            break
    return adder.drain()


def test_nstep_target_uses_the_adders_discount():
    gamma = 0.9
    items = _nstep_items([1.0, 2.0, 3.0, 4.0], n=3, gamma=gamma)
    # first item: 1 + 0.9 * 2 + 0.81 * 3 = 5.23, discount 0.9**3 = 0.729, bootstrapped from obs 3
    assert items["reward"][0] == pytest.approx(5.23)
    assert items["discount"][0] == pytest.approx(0.729)
    assert items["next_obs"][0, 0] == 3.0
    next_q = T([[10.0, 20.0]])
    target = q_learning_target(T(items["reward"][:1]), T(items["discount"][:1]), next_q)
    # slow reference: the n-step return written out as a loop
    ref = sum(gamma ** k * r for k, r in enumerate([1.0, 2.0, 3.0])) + gamma ** 3 * 20.0
    assert float(target) == pytest.approx(ref, rel=1e-6)


def test_nstep_target_does_not_bootstrap_past_termination():
    items = _nstep_items([1.0, 2.0], n=3, gamma=0.9, terminate_at=1)
    # both windows end at the termination: discount 0, reward 1 + 0.9 * 2 and 2
    assert np.allclose(items["discount"], 0.0)
    target = q_learning_target(T(items["reward"]), T(items["discount"]), T([[50.0, 60.0], [50.0, 60.0]]))
    assert torch.allclose(target, T([2.8, 2.0]))


def test_huber():
    x = T([-3.0, -0.5, 0.0, 0.5, 2.0])
    assert torch.allclose(huber(x, 1.0), T([2.5, 0.125, 0.0, 0.125, 1.5]))
    assert torch.allclose(huber(T([3.0, 1.0]), 2.0), T([4.0, 0.5]))


def test_td_loss_huber_mse_and_weights():
    q = T([1.0, 2.0], requires_grad=True)
    target = T([1.5, 5.0])
    loss, td = td_loss(q, target, "huber", 1.0)
    assert float(loss.detach()) == pytest.approx((0.125 + 2.5) / 2)
    assert torch.allclose(td, T([0.5, 3.0]))
    loss.backward()
    assert torch.allclose(q.grad, T([-0.25, -0.5]))  # -clip(td, 1) / n
    q = q.detach()
    loss, _ = td_loss(q, target, "huber", 1.0, weights=T([1.0, 0.5]))
    assert float(loss) == pytest.approx((0.125 + 1.25) / 2)
    loss, _ = td_loss(q, target, "mse")
    assert float(loss) == pytest.approx((0.125 + 4.5) / 2)
    loss, _ = td_loss(q, target, "mse", weights=T([0.0, 2.0]))
    assert float(loss) == pytest.approx(4.5)


def test_fused_huber_matches_the_reference_function():
    q = torch.linspace(-4, 4, 17)
    for delta in (0.5, 1.0, 2.0):
        loss, _ = td_loss(q, torch.zeros(17), "huber", delta)
        assert float(loss) == pytest.approx(float(huber(q, delta).mean()), rel=1e-6)


def test_per_weighted_loss_and_new_priorities():
    probs, size, beta = np.array([0.5, 0.25]), 4, 1.0
    w = importance_weights(probs, size, beta)  # (4 * 0.5)**-1 = 0.5, (4 * 0.25)**-1 = 1, over the max
    assert np.allclose(w, [0.5, 1.0])
    q, target = T([0.0, 0.0]), T([0.5, -2.0])
    loss, td = td_loss(q, target, "huber", 1.0, weights=torch.from_numpy(w))
    assert float(loss) == pytest.approx((0.5 * 0.125 + 1.0 * 1.5) / 2)
    assert torch.allclose(priorities_from_td(td, 1e-6), T([0.5 + 1e-6, 2.0 + 1e-6]))


def test_dueling_aggregation():
    v = T([1.0, 2.0])
    a = T([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]])
    assert torch.allclose(dueling_aggregate(v, a), T([[0.0, 1.0, 2.0], [1.0, 1.0, 4.0]]))
    assert torch.allclose(dueling_aggregate(v.unsqueeze(1), a), dueling_aggregate(v, a))
