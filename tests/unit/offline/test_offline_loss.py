"""The offline learners' math against hand-computed values and slow loops written from the papers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from shoal.agents.continuous.config import SACConfig
from shoal.agents.continuous.distributions import tanh_gaussian_sample
from shoal.agents.continuous.networks import ContinuousNetworks
from shoal.agents.dqn.config import DQNConfig
from shoal.agents.dqn.networks import QNetwork
from shoal.agents.offline.config import CQLConfig, NaiveOfflineConfig
from shoal.agents.offline.cql import CQLDQNLearner, CQLSACLearner
from shoal.agents.offline.loss import (
    bc_discrete_loss,
    bc_mse_loss,
    bc_nll_loss,
    cql_continuous_regulariser,
    cql_discrete_regulariser,
    cql_importance_logsumexp,
    cql_plain_logsumexp,
)
from shoal.core.types import EnvSpec
from shoal.data import ReplayTable
from shoal.envs.make import env_spec
from shoal.errors import ConfigError


def test_bc_discrete_loss_is_the_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, -0.5, 3.0]])
    action = torch.tensor([1, 0])
    by_hand = [-(2.0 - math.log(math.e + math.e ** 2 + 1.0)), -(0.5 - math.log(math.e ** 0.5 + math.e ** -0.5 + math.e ** 3))]
    assert float(bc_discrete_loss(logits, action)) == pytest.approx(sum(by_hand) / 2, rel=1e-6)


def test_bc_nll_loss_is_the_tanh_gaussian_density_by_hand() -> None:
    mean, log_std = torch.tensor([[0.2, -0.1]]), torch.tensor([[-0.5, 0.3]])
    action = torch.tensor([[0.5, -0.9]])
    logp = 0.0
    for m, ls, a in zip(mean[0].tolist(), log_std[0].tolist(), action[0].tolist()):
        u, s = math.atanh(a), math.exp(ls)
        # N(u; m, s) times the Jacobian of u = atanh(a): 1 / (1 - a**2)
        logp += -0.5 * ((u - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi) - math.log(1 - a * a)
    assert float(bc_nll_loss(mean, log_std, action)) == pytest.approx(-logp, rel=1e-5)


def test_bc_nll_loss_stays_finite_on_the_bounds() -> None:
    loss = bc_nll_loss(torch.zeros(2, 1), torch.zeros(2, 1), torch.tensor([[1.0], [-1.0]]))
    assert torch.isfinite(loss)


def test_bc_mse_loss_by_hand() -> None:
    mean, action = torch.tensor([[0.0, 1.0], [2.0, -1.0]]), torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    t = np.tanh(mean.numpy())
    by_hand = (((t[0] - [0.5, 0.5]) ** 2).sum() + ((t[1] - [1.0, 0.0]) ** 2).sum()) / 2
    assert float(bc_mse_loss(mean, action)) == pytest.approx(float(by_hand), rel=1e-6)


def test_cql_discrete_regulariser_by_hand() -> None:
    q = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    action = torch.tensor([0, 2])
    lse0 = math.log(math.e + math.e ** 2 + math.e ** 3)
    lse1 = math.log(3.0)
    expected = ((lse0 - 1.0) + (lse1 - 0.0)) / 2
    assert float(cql_discrete_regulariser(q, action)) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx((3.40760596 - 1.0 + 1.09861229) / 2, rel=1e-7)


def _slow_importance_logsumexp(q_uniform: np.ndarray, q_current: np.ndarray, log_pi_current: np.ndarray,
                               q_next: np.ndarray, log_pi_next: np.ndarray, act_dim: int) -> np.ndarray:
    """Kumar et al. 2020, appendix F (CQL(H) for continuous actions), one critic and state at a time:
    log [ sum_j exp(Q(s, a_j)) / Unif(a_j) + sum_j exp(Q(s, a'_j)) / pi(a'_j|s') + sum_j exp(Q(s, a''_j)) / pi(a''_j|s) ]
    with a_j ~ Unif([-1, 1]^d), a'_j ~ pi(.|s'), a''_j ~ pi(.|s)."""
    k, b, n = q_uniform.shape
    out = np.zeros((k, b))
    density = 0.5 ** act_dim
    for i in range(k):
        for s in range(b):
            total = 0.0
            for j in range(n):
                total += math.exp(q_uniform[i, s, j]) / density
                total += math.exp(q_next[i, s, j]) / math.exp(log_pi_next[s, j])
                total += math.exp(q_current[i, s, j]) / math.exp(log_pi_current[s, j])
            out[i, s] = math.log(total)
    return out


def test_cql_importance_logsumexp_matches_the_slow_loop() -> None:
    g = torch.Generator().manual_seed(3)
    k, b, n, d = 2, 5, 4, 3
    qu, qc, qn = (torch.randn(k, b, n, generator=g, dtype=torch.float64) * 2 for _ in range(3))
    lc, ln = (torch.randn(b, n, generator=g, dtype=torch.float64) for _ in range(2))
    fast = cql_importance_logsumexp(qu, qc, lc, qn, ln, d)
    slow = _slow_importance_logsumexp(qu.numpy(), qc.numpy(), lc.numpy(), qn.numpy(), ln.numpy(), d)
    assert fast.shape == (k, b)
    np.testing.assert_allclose(fast.numpy(), slow, rtol=1e-12)


def test_cql_plain_logsumexp_by_hand() -> None:
    # One critic, one state, N = 1 per proposal: log(e^0 + e^1 + e^2), no density terms.
    qu, qc, qn = torch.tensor([[[0.0]]]), torch.tensor([[[1.0]]]), torch.tensor([[[2.0]]])
    assert cql_plain_logsumexp(qu, qc, qn).item() == pytest.approx(math.log(1 + math.e + math.e ** 2))
    g = torch.Generator().manual_seed(4)
    qu, qc, qn = (torch.randn(2, 3, 5, generator=g) for _ in range(3))
    assert cql_plain_logsumexp(qu, qc, qn).shape == (2, 3)


def test_cql_continuous_regulariser_is_the_gap_per_critic() -> None:
    lse = torch.tensor([[3.0, 5.0], [1.0, 2.0]])
    q = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    assert cql_continuous_regulariser(lse, q).tolist() == pytest.approx([2.5, 1.0])


def _dqn_learner(alpha: float) -> tuple[CQLDQNLearner, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    spec = env_spec("CartPole-v1")
    net = QNetwork(spec, (16,))
    cfg = DQNConfig(batch_size=8, learning_starts=0, hidden=(16,), loss="mse", target_update_interval=5)
    rng = np.random.default_rng(0)
    items: dict[str, np.ndarray] = {"obs": rng.standard_normal((8, 4)).astype(np.float32), "action": rng.integers(0, 2, 8),
             "reward": np.ones(8, np.float32), "discount": np.full(8, 0.99, np.float32),
             "next_obs": rng.standard_normal((8, 4)).astype(np.float32)}
    table = ReplayTable.uniform(8, min_size=1)
    table.insert(items)
    return CQLDQNLearner(net, cfg, table, 100, alpha), items


def test_cql_dqn_loss_is_the_dqn_loss_plus_alpha_times_the_regulariser() -> None:
    cql, items = _dqn_learner(2.0)
    naive, _ = _dqn_learner(0.0)
    loss_cql = cql._loss(items, None, 8)[0]
    loss_td = naive._loss(items, None, 8)[0]
    q_all = cql.net(torch.from_numpy(items["obs"]))
    reg = cql_discrete_regulariser(q_all, torch.from_numpy(items["action"]))
    assert float(loss_cql.detach()) == pytest.approx(float(loss_td.detach()) + 2.0 * float(reg.detach()), rel=1e-6)


def test_naive_offline_dqn_is_cql_with_weight_zero() -> None:
    """With alpha = 0 the CQL learner's updates are the DQN learner's, bit for bit."""
    from shoal.agents.dqn.learner import DQNLearner

    cql, items = _dqn_learner(0.0)
    torch.manual_seed(0)
    plain = DQNLearner(QNetwork(env_spec("CartPole-v1"), (16,)), cql.cfg, cql.table, 100)
    for _ in range(7):
        cql.update(items)
        plain.update(items)
    for a, b in zip(cql.net.parameters(), plain.net.parameters()):
        assert torch.equal(a, b)


def _sac_learner(alpha: float, lagrange: bool = False, corner: bool = False, **kw: Any) -> CQLSACLearner:
    torch.manual_seed(0)
    spec = EnvSpec("toy", (3,), np.dtype(np.float32), False, 2, np.array([-2.0, -1.0]), np.array([2.0, 1.0]))
    net = ContinuousNetworks(spec, (16,), "relu", 2, True, False)
    cfg = SACConfig(batch_size=16, hidden=(16,), learning_starts=0)
    rng = np.random.default_rng(0)
    table = ReplayTable.uniform(64, min_size=1, seed=0)
    table.insert({"obs": rng.standard_normal((64, 3)).astype(np.float32),
                  "action": (np.full((64, 2), 0.8) if corner else rng.uniform(-1, 1, (64, 2))).astype(np.float32),
                  "reward": rng.standard_normal(64).astype(np.float32), "discount": np.full(64, 0.99, np.float32),
                  "next_obs": rng.standard_normal((64, 3)).astype(np.float32)})
    return CQLSACLearner(net, cfg, table, 100, 0, alpha, 4, lagrange=lagrange, **kw)


def test_cql_sac_bc_warm_start_moves_the_policy_to_the_data_and_then_hands_over() -> None:
    """During bc_steps the policy's step is behaviour cloning (towards the data's action 0.8 in every state), then SAC's."""
    warm, plain = _sac_learner(1.0, corner=True, bc_steps=150), _sac_learner(1.0, corner=True)
    for _ in range(150):
        warm.step()
        plain.step()
    obs = torch.from_numpy(warm.table.sample(64)[0]["obs"])
    with torch.no_grad():
        gaps = [float((torch.tanh(lr.net.policy(obs)[0]) - 0.8).abs().mean()) for lr in (warm, plain)]
    assert gaps[0] < 0.5 * gaps[1], gaps  # alpha = 1 keeps it wide, so tanh(mean) is pulled short of 0.8
    warm.steps = 149  # the warm start's last update
    assert "loss_bc" in warm._autograd_gradients(obs, obs, {"obs": obs, "action": torch.full((64, 2), 0.8),
                                                            "reward": torch.zeros(64), "discount": torch.ones(64),
                                                            "next_obs": obs}, None, torch.tensor(1.0), True)[0]
    warm.steps = 150  # the warm start is over: the policy step is SAC's again
    assert "loss_bc" not in warm._autograd_gradients(obs, obs, {"obs": obs, "action": torch.full((64, 2), 0.8),
                                                                "reward": torch.zeros(64), "discount": torch.ones(64),
                                                                "next_obs": obs}, None, torch.tensor(1.0), True)[0]


def test_cql_sac_plain_logsumexp_is_used_without_importance_sampling() -> None:
    cql = _sac_learner(1.0, importance_sample=False)
    obs = torch.randn(5, 3)
    cql.gen.manual_seed(7)
    out = cql.cql_logsumexp(obs, obs)
    cql.gen.manual_seed(7)
    n, d = cql.num_sampled, 2
    with torch.no_grad():
        uniform = torch.rand((5 * n, d), generator=cql.gen) * 2.0 - 1.0
        rep = obs.repeat_interleave(n, dim=0)
        mean, log_std = cql.net.policy(torch.cat([rep, rep]))
        act = tanh_gaussian_sample(mean, log_std, torch.randn(mean.shape, generator=cql.gen))[0]
        q = cql.net.critic(torch.cat([rep, rep, rep]), torch.cat([uniform, act])).reshape(2, 3, 5, n)
    ref = torch.logsumexp(q.permute(0, 2, 1, 3).reshape(2, 5, 3 * n), dim=-1)
    torch.testing.assert_close(out.detach(), ref)


def test_naive_offline_sac_is_cql_sac_with_weight_zero() -> None:
    """With alpha = 0 the CQL-SAC learner's updates are the plain SAC learner's (autograd path), bit for bit."""
    from shoal.agents.continuous.learner import SACLearner

    cql = _sac_learner(0.0)
    torch.manual_seed(0)
    spec = EnvSpec("toy", (3,), np.dtype(np.float32), False, 2, np.array([-2.0, -1.0]), np.array([2.0, 1.0]))
    plain = SACLearner(ContinuousNetworks(spec, (16,), "relu", 2, True, False), cql.cfg, _sac_learner(0.0).table, 100, 0)
    plain.fused = None
    for _ in range(5):
        cql.step()
        plain.step()
    for a, b in zip(cql.net.parameters(), plain.net.parameters()):
        assert torch.equal(a, b)


def test_cql_sac_regulariser_lowers_q_off_the_data() -> None:
    """The dataset's actions sit at one corner; CQL-SAC learns Q(s, a_data) above Q(s, a) of other actions, naive SAC not."""
    cql, naive = _sac_learner(20.0, corner=True), _sac_learner(0.0, corner=True)
    for _ in range(60):
        cql.step()
        naive.step()
    batch, _, _ = cql.table.sample(64)
    obs, act = torch.from_numpy(batch["obs"]), torch.from_numpy(batch["action"])
    other = torch.rand(64, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        margins = [float((lr.net.critic(obs, act) - lr.net.critic(obs, other)).mean()) for lr in (cql, naive)]
    assert margins[0] > margins[1] + 0.1


def test_cql_sac_logsumexp_reaches_only_the_critics() -> None:
    cql = _sac_learner(1.0)
    obs = torch.randn(4, 3)
    lse = cql.cql_logsumexp(obs, torch.randn(4, 3))
    assert lse.shape == (2, 4)
    lse.sum().backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in cql.net.policy.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in cql.net.critic.parameters())


def test_lagrange_multiplier_grows_while_the_gap_exceeds_its_target() -> None:
    cql = _sac_learner(5.0, lagrange=True)
    cql.target_action_gap = -100.0  # the gap is always above it: alpha' must rise
    start = float(cql.log_alpha_prime.detach())
    for _ in range(10):
        cql.step()
    assert float(cql.log_alpha_prime.detach()) > start


def test_default_weights_and_naive_config() -> None:
    assert CQLConfig().alpha_for(True) == 1.0 and CQLConfig().alpha_for(False) == 5.0
    assert CQLConfig(cql_alpha=3.0).alpha_for(False) == 3.0
    assert NaiveOfflineConfig().alpha_for(True) == 0.0
    with pytest.raises(ConfigError, match="cql_alpha"):
        NaiveOfflineConfig(cql_alpha=1.0)
