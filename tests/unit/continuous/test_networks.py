"""The batched critic ensemble, policies, action scaling and acting-only state dicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shoal.agents.continuous.builder import ContinuousBuilder
from shoal.agents.continuous.config import DDPGConfig, SACConfig, TD3Config
from shoal.agents.continuous.networks import QEnsemble
from shoal.core.types import EnvSpec
from shoal.envs.make import env_spec
from shoal.errors import EnvError


def test_ensemble_members_equal_separate_mlps() -> None:
    torch.manual_seed(0)
    q = QEnsemble(obs_dim=3, act_dim=2, hidden=(5, 4), act="relu", k=3)
    obs, act = torch.randn(7, 3), torch.randn(7, 2)
    out = q(obs, act)
    assert out.shape == (3, 7)
    x0 = torch.cat([obs, act], -1)
    for i in range(3):
        x = x0
        for j, layer in enumerate(q.layers):
            x = x @ layer.weight[i] + layer.bias[i, 0]
            if j < len(q.layers) - 1:
                x = F.relu(x)
        assert torch.allclose(out[i], x.squeeze(-1), atol=1e-6)
    assert torch.allclose(q(obs, act, members=1)[0], out[0])


def test_detached_params_pass_gradients_to_inputs_only() -> None:
    q = QEnsemble(3, 1, (8,), "relu", 2)
    act = torch.randn(4, 1, requires_grad=True)
    q(torch.randn(4, 3), act, detach_params=True).sum().backward()
    assert act.grad is not None and act.grad.abs().sum() > 0
    assert all(p.grad is None for p in q.parameters())


def test_actions_rescale_to_env_bounds() -> None:
    spec = EnvSpec("box", (3,), np.dtype(np.float32), False, 2, np.array([-2.0, 0.0], np.float32),
                   np.array([2.0, 10.0], np.float32))
    net = ContinuousBuilder(DDPGConfig(hidden=(8,)), spec).make_networks()
    a = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])
    assert torch.allclose(net.scale_action(a), torch.tensor([[-2.0, 0.0], [2.0, 10.0], [0.0, 5.0]]))


@pytest.mark.parametrize("cfg", [DDPGConfig(hidden=(8,)), TD3Config(hidden=(8,)), SACConfig(hidden=(8,))])
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
