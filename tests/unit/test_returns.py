"""Returns math against hand-computed values and slow loop references."""

import numpy as np
import pytest
import torch

from shoal.returns import discounted_returns, fold_truncation, gae, n_step_targets, td_lambda


def loop_gae(r, v, boot, d, lam):
    T, B = r.shape
    adv = np.zeros((T, B))
    for b in range(B):
        acc = 0.0
        for t in reversed(range(T)):
            nv = boot[b] if t == T - 1 else v[t + 1, b]
            delta = r[t, b] + d[t, b] * nv - v[t, b]
            acc = delta + d[t, b] * lam * acc
            adv[t, b] = acc
    return adv


def test_discounted_returns_hand_computed():
    r = torch.tensor([[1.0], [2.0], [3.0]])
    d = torch.tensor([[0.9], [0.0], [0.9]])  # episode terminates after step 1
    boot = torch.tensor([10.0])
    g = discounted_returns(r, d, boot)
    # G2 = 3 + 0.9*10 = 12; G1 = 2 + 0*12 = 2; G0 = 1 + 0.9*2 = 2.8
    torch.testing.assert_close(g, torch.tensor([[2.8], [2.0], [12.0]]))


def test_gae_hand_computed():
    r = torch.tensor([[1.0], [1.0]])
    v = torch.tensor([[0.5], [0.2]])
    boot = torch.tensor([0.4])
    d = torch.tensor([[0.9], [0.9]])
    lam = 0.5
    # delta1 = 1 + 0.9*0.4 - 0.2 = 1.16 ; A1 = 1.16
    # delta0 = 1 + 0.9*0.2 - 0.5 = 0.68 ; A0 = 0.68 + 0.9*0.5*1.16 = 1.202
    torch.testing.assert_close(gae(r, v, boot, d, lam), torch.tensor([[1.202], [1.16]]))
    torch.testing.assert_close(td_lambda(r, v, boot, d, lam), torch.tensor([[1.702], [1.36]]))


@pytest.mark.parametrize("lam", [0.0, 0.8, 1.0])
def test_gae_matches_loop_reference(lam):
    g = np.random.default_rng(0)
    T, B = 17, 5
    r, v, boot = g.normal(size=(T, B)), g.normal(size=(T, B)), g.normal(size=B)
    d = 0.97 * (g.random((T, B)) > 0.2)
    out = gae(*(torch.tensor(x) for x in (r, v, boot, d)), lam)
    np.testing.assert_allclose(out.numpy(), loop_gae(r, v, boot, d, lam), rtol=1e-10, atol=1e-10)


def test_gae_with_lambda_one_equals_discounted_return_minus_value():
    g = np.random.default_rng(1)
    r, v, boot = (torch.tensor(g.normal(size=s)) for s in ((9, 3), (9, 3), (3,)))
    d = torch.full((9, 3), 0.9)
    torch.testing.assert_close(gae(r, v, boot, d, 1.0), discounted_returns(r, d, boot) - v)


def test_n_step_targets_hand_computed():
    r = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    v = torch.tensor([[10.0], [20.0], [30.0], [40.0]])
    boot = torch.tensor([50.0])
    d = torch.tensor([[0.5], [0.5], [0.0], [0.5]])  # terminates after step 2
    out = n_step_targets(r, v, boot, d, 2)
    # t0: 1 + .5*2 + .25*V(s2)=30*.25 -> 1+1+7.5 = 9.5
    # t1: 2 + .5*3 + (.5*0)*V(s3) = 3.5
    # t2: 3 + 0 * ... = 3
    # t3: 4 + .5 * boot(50) = 29 (window past the end bootstraps from boot)
    torch.testing.assert_close(out, torch.tensor([[9.5], [3.5], [3.0], [29.0]]))


def test_n_step_one_is_td0():
    g = np.random.default_rng(2)
    r, v, boot = (torch.tensor(g.normal(size=s)) for s in ((6, 2), (6, 2), (2,)))
    d = torch.full((6, 2), 0.9)
    nxt = torch.cat([v[1:], boot[None]])
    torch.testing.assert_close(n_step_targets(r, v, boot, d, 1), r + d * nxt)


def test_fold_truncation_bootstraps_from_final_value_only_on_truncation():
    r = torch.tensor([[1.0, 1.0, 1.0]])
    term = torch.tensor([[0.0, 1.0, 0.0]])
    trunc = torch.tensor([[1.0, 0.0, 0.0]])
    final_v = torch.tensor([[5.0, 7.0, 0.0]])
    new_r, disc = fold_truncation(r, term, trunc, final_v, 0.9)
    torch.testing.assert_close(new_r, torch.tensor([[1.0 + 4.5, 1.0, 1.0]]))
    torch.testing.assert_close(disc, torch.tensor([[0.0, 0.0, 0.9]]))
