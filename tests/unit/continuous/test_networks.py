"""The batched critic ensemble, policies, action scaling and acting-only state dicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shoal.agents.continuous.builder import ContinuousBuilder
from shoal.agents.continuous.config import DDPGConfig, SACConfig, TD3Config
from shoal.agents.continuous.networks import DeterministicPolicy, EnsembleLinear, QEnsemble, TanhGaussianPolicy
from shoal.core.types import EnvSpec
from shoal.envs.make import env_spec
from shoal.errors import EnvError

ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh}


def _member(q: QEnsemble, i: int, x: torch.Tensor, activation: str) -> torch.Tensor:
    """Critic ``i`` of ``q`` as a separate MLP ``x @ W_i + b_i`` with the activation between layers."""
    for j, layer in enumerate(q.layers):
        x = x @ layer.weight[i] + layer.bias[i, 0]
        if j < len(q.layers) - 1:
            x = ACTIVATIONS[activation](x)
    return x.squeeze(-1)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_ensemble_members_equal_separate_mlps(activation) -> None:
    torch.manual_seed(0)
    q = QEnsemble(obs_dim=3, act_dim=2, hidden=(5, 4), act=activation, k=3)
    assert q.relu == (activation == "relu")  # only ReLU critics take the fused layers
    obs, act = torch.randn(7, 3), torch.randn(7, 2)
    out = q(obs, act)
    assert out.shape == (3, 7)
    x0 = torch.cat([obs, act], -1)
    for i in range(3):
        assert torch.allclose(out[i], _member(q, i, x0, activation), atol=1e-6)
    assert torch.allclose(q(obs, act, members=1)[0], out[0])
    assert torch.allclose(q(obs, act, members=2), out[:2])
    assert torch.allclose(q(obs, act, detach_params=True), out)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_ensemble_gradients_equal_separate_mlps_and_reach_only_used_members(activation) -> None:
    torch.manual_seed(0)
    q = QEnsemble(3, 2, (5, 4), activation, 3)
    obs, act = torch.randn(7, 3), torch.randn(7, 2)
    q(obs, act, members=2).sum().backward()
    grads = [p.grad.clone() for p in q.parameters()]
    q.zero_grad()
    sum(_member(q, i, torch.cat([obs, act], -1), activation).sum() for i in range(2)).backward()
    for got, p in zip(grads, q.parameters()):
        assert torch.allclose(got, p.grad, atol=1e-6)
        assert got[:2].abs().sum() > 0 and torch.equal(got[2], torch.zeros_like(got[2]))  # member 3 unused


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_detached_params_pass_gradients_to_inputs_only(activation) -> None:
    q = QEnsemble(3, 1, (8,), activation, 2)
    act = torch.randn(4, 1, requires_grad=True)
    q(torch.randn(4, 3), act, detach_params=True).sum().backward()
    assert act.grad is not None and act.grad.abs().sum() > 0
    assert all(p.grad is None for p in q.parameters())


def test_ensemble_linear_applies_each_member_to_shared_or_own_inputs() -> None:
    torch.manual_seed(0)
    layer = EnsembleLinear(3, 4, 2)
    assert layer.weight.shape == (3, 4, 2) and layer.bias.shape == (3, 1, 2)
    shared, own = torch.randn(5, 4), torch.randn(3, 5, 4)
    out_shared, out_own = layer(shared), layer(own)
    assert out_shared.shape == out_own.shape == (3, 5, 2)
    for i in range(3):
        assert torch.allclose(out_shared[i], shared @ layer.weight[i] + layer.bias[i, 0], atol=1e-6)
        assert torch.allclose(out_own[i], own[i] @ layer.weight[i] + layer.bias[i, 0], atol=1e-6)
    assert torch.equal(layer(shared, members=2), out_shared[:2])
    assert torch.equal(layer(own[:1], members=1), out_own[:1])


def test_ensemble_linear_detach_params_and_members_route_gradients() -> None:
    layer = EnsembleLinear(3, 4, 2)
    x = torch.randn(5, 4, requires_grad=True)
    layer(x, detach_params=True, members=2).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    assert x.grad is not None and torch.allclose(x.grad, layer.weight[:2].detach().sum((0, 2)).expand(5, 4))
    layer(x.detach(), members=1).sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None
    assert torch.allclose(layer.weight.grad[0], x.detach().sum(0, keepdim=True).t().expand(4, 2))
    assert torch.equal(layer.weight.grad[1:], torch.zeros(2, 4, 2))
    assert torch.equal(layer.bias.grad, torch.tensor([[[5.0, 5.0]], [[0.0, 0.0]], [[0.0, 0.0]]]))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_policies_equal_their_layers_run_one_by_one(activation) -> None:
    torch.manual_seed(0)
    obs = torch.randn(6, 3)
    sac, dpg = TanhGaussianPolicy(3, 2, (8, 8), activation), DeterministicPolicy(3, 2, (8,), activation)
    with torch.no_grad():
        sac.net[-1].bias[2:] += torch.tensor([4.0, -30.0])  # the log-std clamp active on both sides
    for policy in (sac, dpg):
        assert (policy.linears is None) == (activation == "tanh")  # only ReLU stacks take the fused layers
    lins = [m for m in sac.net if isinstance(m, torch.nn.Linear)]
    h = obs
    for j, lin in enumerate(lins):
        h = h @ lin.weight.t() + lin.bias
        if j < len(lins) - 1:
            h = ACTIVATIONS[activation](h)
    mean, log_std = sac(obs)
    assert torch.allclose(mean, h[:, :2], atol=1e-6)
    assert torch.allclose(log_std, h[:, 2:].clamp(-20.0, 2.0), atol=1e-6)
    assert (log_std[:, 0] == 2.0).all() and (log_std[:, 1] == -20.0).all()
    mean.sum().backward()
    grads = [p.grad.clone() for p in sac.parameters()]
    sac.zero_grad()
    h[:, :2].sum().backward()
    for got, p in zip(grads, sac.parameters()):
        assert torch.allclose(got, p.grad, atol=1e-6)
    first, last = dpg.net[0], dpg.net[-1]
    expected = torch.tanh(ACTIVATIONS[activation](obs @ first.weight.t() + first.bias) @ last.weight.t() + last.bias)
    assert torch.allclose(dpg(obs), expected, atol=1e-6)


def test_actions_rescale_to_env_bounds() -> None:
    spec = EnvSpec("box", (3,), np.dtype(np.float32), False, 2, np.array([-2.0, 0.0], np.float32),
                   np.array([2.0, 10.0], np.float32))
    net = ContinuousBuilder(DDPGConfig(hidden=(8,)), spec).make_networks()
    a = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])
    assert torch.allclose(net.scale_action(a), torch.tensor([[-2.0, 0.0], [2.0, 10.0], [0.0, 5.0]]))


@pytest.mark.parametrize("cfg", [DDPGConfig(hidden=(8,)), TD3Config(hidden=(8,)), SACConfig(hidden=(8,)),
                                 TD3Config(hidden=(8,), activation="tanh"),
                                 SACConfig(hidden=(8,), activation="tanh")])
def test_networks_shapes_and_acting_state_dict(cfg) -> None:
    spec = env_spec("Pendulum-v1")
    b = ContinuousBuilder(cfg, spec)
    net, other = b.make_networks(), b.make_networks()
    obs = torch.randn(5, 3)
    mode = net.mode(obs)
    assert mode.shape == (5, 1) and (mode.abs() <= 1).all()
    assert net.critic(obs, mode).shape == (cfg.num_critics, 5)
    assert (net.policy_target is None) == isinstance(cfg, SACConfig)
    assert (net.log_alpha is None) == (not isinstance(cfg, SACConfig))
    acting = {k: v for k, v in net.state_dict().items() if k in net.acting_keys}
    assert acting and not any(k.startswith("critic") for k in acting)
    other.load_state_dict(acting)  # acting keys alone load (strict otherwise)
    assert torch.equal(other.mode(obs), net.mode(obs))
    with pytest.raises(RuntimeError):
        other.load_state_dict({k: v for k, v in list(acting.items())[:-1]})


def test_rejects_discrete_image_and_unbounded_spaces() -> None:
    with pytest.raises(EnvError, match="discrete"):
        ContinuousBuilder(SACConfig(), env_spec("CartPole-v1"))
    unbounded = EnvSpec("u", (3,), np.dtype(np.float32), False, 1, np.array([-np.inf], np.float32),
                        np.array([np.inf], np.float32))
    with pytest.raises(EnvError, match="finite"):
        ContinuousBuilder(SACConfig(), unbounded)
    image = EnvSpec("i", (3, 84, 84), np.dtype(np.uint8), False, 1, np.array([-1.0], np.float32),
                    np.array([1.0], np.float32))
    with pytest.raises(EnvError, match="flat vector"):
        ContinuousBuilder(SACConfig(), image)
