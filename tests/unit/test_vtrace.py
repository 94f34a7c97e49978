"""V-trace against a slow loop written from the IMPALA paper's definition (section 4.1)."""

import numpy as np
import pytest
import torch

from shoal.returns import gae, vtrace


def paper_vtrace(log_rhos, discounts, rewards, values, bootstrap, rho_bar, c_bar, pg_rho_bar):
    """v_s = V(x_s) + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} d_i c_i) rho_t (r_t + d_t V(x_{t+1}) - V(x_t)),
    written as the paper's explicit sum (no recursion); pg_adv_s = rho_pg_s (r_s + d_s v_{s+1} - V(x_s))."""
    T, B = rewards.shape
    ratio = np.exp(log_rhos)
    clip = lambda x, bar: x if bar is None else np.minimum(bar, x)  # noqa: E731
    rho, c, pg_rho = clip(ratio, rho_bar), clip(ratio, c_bar), clip(ratio, pg_rho_bar)
    v_ext = np.concatenate([values, bootstrap[None]], 0)
    vs = np.zeros((T, B))
    for b in range(B):
        for s in range(T):
            total = 0.0
            for t in range(s, T):
                weight = 1.0
                for i in range(s, t):
                    weight *= discounts[i, b] * c[i, b]
                total += weight * rho[t, b] * (rewards[t, b] + discounts[t, b] * v_ext[t + 1, b] - v_ext[t, b])
            vs[s, b] = values[s, b] + total
    vs_ext = np.concatenate([vs, bootstrap[None]], 0)
    pg = pg_rho * (rewards + discounts * vs_ext[1:] - values)
    return vs, pg


def random_inputs(seed, T=7, B=5, gamma=0.9):
    rng = np.random.default_rng(seed)
    terminated = rng.random((T, B)) < 0.2  # episode ends inside the unroll
    return dict(
        log_rhos=rng.normal(0.0, 0.8, (T, B)),
        discounts=gamma * (1.0 - terminated),
        rewards=rng.normal(size=(T, B)),
        values=rng.normal(size=(T, B)),
        bootstrap=rng.normal(size=B),
    )


@pytest.mark.parametrize("thresholds", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.5), (0.7, 1.0, 0.3), (None, None, None)])
@pytest.mark.parametrize("seed", [0, 1])
def test_vtrace_matches_the_paper_loop(thresholds, seed):
    x = random_inputs(seed)
    assert (x["discounts"] == 0).any(), "the inputs must hold an episode end inside the unroll"
    want_vs, want_pg = paper_vtrace(x["log_rhos"], x["discounts"], x["rewards"], x["values"], x["bootstrap"], *thresholds)
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in x.items()}
    out = vtrace(t["log_rhos"], t["discounts"], t["rewards"], t["values"], t["bootstrap"],
                 clip_rho_threshold=thresholds[0], clip_c_threshold=thresholds[1], clip_pg_rho_threshold=thresholds[2])
    np.testing.assert_allclose(out.vs.numpy(), want_vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.pg_advantages.numpy(), want_pg, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("thresholds", [(1.0, 1.0, 1.0), (3.0, 2.0, 5.0)])
def test_on_policy_vtrace_is_the_lambda_one_return(thresholds):
    x = random_inputs(3)
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in x.items()}
    zeros = torch.zeros_like(t["rewards"])
    out = vtrace(zeros, t["discounts"], t["rewards"], t["values"], t["bootstrap"], *thresholds)
    adv = gae(t["rewards"], t["values"], t["bootstrap"], t["discounts"], lam=1.0)
    torch.testing.assert_close(out.vs, adv + t["values"])  # the n-step return to the unroll's end
    # pg advantage with v_{s+1} = the return from s+1 is the same lambda=1 advantage
    torch.testing.assert_close(out.pg_advantages, adv)


def test_vtrace_hand_computed_two_steps():
    # T=2, B=1, rho = exp(log 2) = 2 -> clipped to 1 for rho and c; pg threshold 1.
    log_rhos = torch.log(torch.tensor([[2.0], [0.5]]))
    d = torch.tensor([[0.9], [0.9]])
    r = torch.tensor([[1.0], [2.0]])
    v = torch.tensor([[0.5], [1.0]])
    boot = torch.tensor([3.0])
    out = vtrace(log_rhos, d, r, v, boot)
    # step 1: rho=0.5: v1 - V1 = 0.5 * (2 + 0.9*3 - 1) = 1.85 -> v1 = 2.85
    # step 0: rho=1 (clipped), c=1: v0 - V0 = (1 + 0.9*1 - 0.5) + 0.9*1*1.85 = 1.4 + 1.665 = 3.065 -> v0 = 3.565
    torch.testing.assert_close(out.vs, torch.tensor([[3.565], [2.85]]))
    # pg: adv0 = 1 * (1 + 0.9*2.85 - 0.5) = 3.065; adv1 = 0.5 * (2 + 0.9*3 - 1) = 1.85
    torch.testing.assert_close(out.pg_advantages, torch.tensor([[3.065], [1.85]]))


def test_vtrace_carries_no_gradient():
    x = random_inputs(4)
    values = torch.tensor(x["values"], requires_grad=True)
    log_rhos = torch.tensor(x["log_rhos"], requires_grad=True)
    out = vtrace(log_rhos, torch.tensor(x["discounts"]), torch.tensor(x["rewards"]), values, torch.tensor(x["bootstrap"]))
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad


def test_vtrace_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="log_rhos"):
        vtrace(torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(2))


def test_lambda_scales_the_traces_as_in_the_paper_remark():
    """With lambda < 1 the trace weights are lambda * min(c_bar, ratio) (IMPALA, remark after eq. 1)."""
    x = random_inputs(5)
    lam = 0.7
    ratio = np.exp(x["log_rhos"])
    want_vs, _ = paper_vtrace(x["log_rhos"], x["discounts"], x["rewards"], x["values"], x["bootstrap"], 1.0, 1.0, 1.0)
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in x.items()}
    # the recursion v_s - V_s = delta_s + d_s c_s (v_{s+1} - V_{s+1}) with traces c_s = lambda * min(1, ratio)
    T, B = x["rewards"].shape
    rho = np.minimum(1.0, ratio)
    c = lam * np.minimum(1.0, ratio)
    v_ext = np.concatenate([x["values"], x["bootstrap"][None]], 0)
    vs = np.zeros((T, B))
    acc = np.zeros(B)
    for s in reversed(range(T)):
        delta = rho[s] * (x["rewards"][s] + x["discounts"][s] * v_ext[s + 1] - v_ext[s])
        acc = delta + x["discounts"][s] * c[s] * acc
        vs[s] = x["values"][s] + acc
    out = vtrace(t["log_rhos"], t["discounts"], t["rewards"], t["values"], t["bootstrap"], lambda_=lam)
    np.testing.assert_allclose(out.vs.numpy(), vs, rtol=1e-10, atol=1e-10)
    assert not np.allclose(vs, want_vs)  # lambda = 0.7 really changed the targets from lambda = 1
