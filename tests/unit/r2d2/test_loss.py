"""R2D2's math: value rescaling, n-step Double Q targets (against a loop written from the paper), priorities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shoal.agents.r2d2.loss import (
    inverse_value_rescale,
    n_step_double_q_targets,
    sequence_priorities,
    sequence_td_loss,
    trained_steps,
    value_rescale,
)


def test_value_rescale_matches_hand_values():
    x = torch.tensor([0.0, 3.0, -8.0, 99.0, 0.5], dtype=torch.float64)
    expected = [0.0, 1.0 + 0.003, -2.0 - 0.008, 9.0 + 0.099, math.sqrt(1.5) - 1 + 0.0005]
    assert value_rescale(x, 1e-3).tolist() == pytest.approx(expected, abs=1e-12)


def test_inverse_value_rescale_is_the_exact_inverse():
    x = torch.cat([torch.linspace(-1e4, 1e4, 2001, dtype=torch.float64),
                   torch.linspace(-2, 2, 401, dtype=torch.float64)])
    for eps in (1e-3, 1e-2):
        assert torch.allclose(inverse_value_rescale(value_rescale(x, eps), eps), x, rtol=1e-9, atol=1e-9)
        assert torch.allclose(value_rescale(inverse_value_rescale(x, eps), eps), x, rtol=1e-9, atol=1e-9)
    # hand values of the inverse: h(3) = 1.003, h(-8) = -2.008
    y = torch.tensor([1.003, -2.008, 0.0], dtype=torch.float64)
    assert inverse_value_rescale(y, 1e-3).tolist() == pytest.approx([3.0, -8.0, 0.0], abs=1e-9)


def _slow_targets(reward, discount, mask, q_online, q_target, n, eps):
    """Targets written from the paper, one (t, b) at a time with Python floats."""
    T, B = reward.shape
    h = (lambda v: math.copysign(math.sqrt(abs(v) + 1) - 1, v) + eps * v) if eps is not None else (lambda v: v)

    def h_inv(v):
        if eps is None:
            return v
        return math.copysign(((math.sqrt(1 + 4 * eps * (abs(v) + 1 + eps)) - 1) / (2 * eps)) ** 2 - 1, v)

    out = np.zeros((T - 1, B))
    for b in range(B):
        last = max(i for i in range(T) if mask[i, b])
        for t in range(T - 1):
            if not mask[t + 1, b]:
                continue
            j = min(t + n, last)
            g, scale = 0.0, 1.0
            for k in range(t, j):
                g += scale * float(reward[k, b])
                scale *= float(discount[k, b])
            a_star = int(np.argmax(q_online[j, b]))
            g += scale * h_inv(float(q_target[j, b, a_star]))
            out[t, b] = h(g)
    return out


@pytest.mark.parametrize("n, eps", [(1, 1e-3), (3, 1e-3), (5, None), (7, 1e-3)])
def test_n_step_double_q_targets_match_a_slow_loop(n, eps):
    rng = np.random.default_rng(n)
    T, B, A = 9, 5, 3
    reward = rng.normal(size=(T, B))
    discount = np.full((T, B), 0.97)
    mask = np.ones((T, B), bool)
    # column 1 terminates: its last real step has discount 0, then the final observation, then padding
    discount[4, 1] = 0.0
    mask[6:, 1] = False
    reward[5:, 1] = discount[5:, 1] = 0.0
    # column 2 is truncated (discount gamma into the final observation at 5), then padding
    mask[6:, 2] = False
    reward[5:, 2] = discount[5:, 2] = 0.0
    # column 3 holds only two real timesteps
    mask[2:, 3] = False
    q_online, q_target = rng.normal(size=(T, B, A)) * 5, rng.normal(size=(T, B, A)) * 5
    got = n_step_double_q_targets(*(torch.as_tensor(x) for x in (reward, discount, mask, q_online, q_target)), n,
                                  eps)
    want = _slow_targets(reward, discount, mask, q_online, q_target, n, eps)
    valid = trained_steps(torch.as_tensor(mask)).numpy()
    assert valid.sum() == 8 * 2 + 5 + 5 + 1
    np.testing.assert_allclose(got.numpy()[valid], want[valid], rtol=1e-10, atol=1e-10)


def test_double_q_target_hand_values():
    # one sequence of 4 timesteps, n = 2, no rescaling: target_0 = r0 + g r1 + g^2 Q_target(s2, argmax Q_online(s2))
    reward = torch.tensor([[1.0], [2.0], [4.0], [0.0]])
    discount = torch.full((4, 1), 0.5)
    mask = torch.ones(4, 1, dtype=torch.bool)
    q_online = torch.tensor([[[0.0, 0.0]], [[0.0, 0.0]], [[1.0, 3.0]], [[5.0, -1.0]]])
    q_target = torch.tensor([[[0.0, 0.0]], [[0.0, 0.0]], [[10.0, 20.0]], [[8.0, 100.0]]])
    got = n_step_double_q_targets(reward, discount, mask, q_online, q_target, 2, None)[:, 0].tolist()
    # t=0: 1 + 0.5*2 + 0.25*20; t=1: 2 + 0.5*4 + 0.25*8 (a* = 0 by the online net, not the target's 100);
    # t=2: the window is cut at the last timestep: 4 + 0.5*8
    assert got == pytest.approx([7.0, 6.0, 8.0])


def test_sequence_priorities_match_hand_values():
    td = torch.tensor([[1.0, -3.0], [2.0, 0.5], [-0.5, 9.0]])
    valid = torch.tensor([[True, True], [True, True], [True, False]])
    got = sequence_priorities(td, valid, eta=0.9, eps=0.0).tolist()
    assert got == pytest.approx([0.9 * 2 + 0.1 * 3.5 / 3, 0.9 * 3 + 0.1 * 1.75])
    assert sequence_priorities(td, valid, eta=0.5, eps=0.01).tolist() == pytest.approx(
        [0.5 * 2 + 0.5 * 3.5 / 3 + 0.01, 0.5 * 3 + 0.5 * 1.75 + 0.01])
    none_valid = sequence_priorities(td, torch.zeros_like(valid), eps=1e-6)
    assert none_valid.tolist() == pytest.approx([1e-6, 1e-6])


def test_sequence_td_loss_averages_valid_steps_with_importance_weights():
    q = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    target = torch.tensor([[2.0, 1.0], [0.0, 5.0]])
    valid = torch.tensor([[True, True], [True, False]])
    w = torch.tensor([0.5, 1.0])
    loss, td = sequence_td_loss(q, target, valid, "mse", weights=w)
    # valid steps: (b0: 2, -1 with weight 0.5), (b1: 0 with weight 1); mean over the three
    assert float(loss.detach()) == pytest.approx((0.5 * 0.5 * 4 + 0.5 * 0.5 * 1 + 0.0) / 3)
    assert td.tolist() == [[2.0, 0.0], [-1.0, 0.0]]
