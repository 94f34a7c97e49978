"""Network pieces: FastTanh equals tanh (values and gradients), ParallelMLP slices are independent MLPs,
and the numpy inference engine agrees with the torch network."""

import numpy as np
import torch

from shoal.agents.pg.builder import ActorCriticBuilder
from shoal.agents.pg.config import PPOConfig
from shoal.agents.pg.inference import NumpyEngine, TorchEngine
from shoal.envs import env_spec
from shoal.nets.torsos import FastTanh, ParallelMLP


def test_fast_tanh_matches_tanh_and_its_gradient():
    x = torch.linspace(-20, 20, 4001, dtype=torch.float32, requires_grad=True)
    y = FastTanh()(x)
    torch.testing.assert_close(y, torch.tanh(x), atol=2e-7, rtol=0)
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, 1 - torch.tanh(x.detach()) ** 2, atol=5e-7, rtol=0)
    with torch.inference_mode():
        torch.testing.assert_close(FastTanh()(x.detach()), torch.tanh(x.detach()), atol=2e-7, rtol=0)


def test_parallel_mlp_slices_are_separate_mlps():
    torch.manual_seed(0)
    m = ParallelMLP(3, (5, 4), k=2, act="tanh")
    x = torch.randn(7, 3)
    out = m(x)
    for i in range(2):
        h = x
        for w, b in zip(m.weights, m.biases):
            h = torch.tanh(h @ w[i] + b[i])
        torch.testing.assert_close(out[i], h, atol=1e-6, rtol=0)
    out[0].sum().backward()
    for w in m.weights:  # slice 1 does not feed slice 0
        assert w.grad[1].abs().sum() == 0 and w.grad[0].abs().sum() > 0


def test_numpy_engine_matches_torch_network():
    for env in ("CartPole-v1", "Pendulum-v1"):
        spec = env_spec(env)
        b = ActorCriticBuilder(PPOConfig(normalize_obs=True), spec)
        net = b.make_networks()
        net.obs_norm.update(torch.randn(100, *spec.obs_shape) * 3 + 1)
        obs = np.random.default_rng(0).normal(size=(9, *spec.obs_shape)).astype(np.float32)
        _, _, v_np, p_np = NumpyEngine(net, 0).act(obs)
        _, _, v_t, p_t = TorchEngine(net, 0).act(obs)
        np.testing.assert_allclose(p_np, p_t, atol=1e-5)
        np.testing.assert_allclose(v_np, v_t, atol=1e-5)
        # log-probs of the engine's own sample equal the torch distribution's
        a, logp, _, params = NumpyEngine(net, 1).act(obs)
        ref = net.dist.log_prob(torch.from_numpy(params), torch.from_numpy(a))
        np.testing.assert_allclose(logp, ref.numpy(), atol=1e-5)


def test_mlp_layers_with_default_init_is_a_plain_torch_mlp():
    from torch import nn

    from shoal.nets.torsos import MLP, mlp_layers

    torch.manual_seed(3)
    ours = mlp_layers(4, (8, 6), "relu", out_dim=2, init_gain=None)
    torch.manual_seed(3)
    ref = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    assert [type(m) for m in ours] == [type(m) for m in ref]
    for (ka, a), (kb, b) in zip(ours.state_dict().items(), ref.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    torso = MLP(4, (8, 6), "tanh")  # the PPO torso: orthogonal hidden weights, zero biases, no output layer
    w = torso.net[0].weight
    torch.testing.assert_close(w.T @ w, 2.0 * torch.eye(4), atol=1e-5, rtol=0)  # [8, 4]: orthogonal columns, gain sqrt(2)
    assert torso.out_dim == 6 and torso.net[-1].__class__.__name__ == "FastTanh"
    assert all(lin.bias.abs().sum() == 0 for lin in torso.net if isinstance(lin, nn.Linear))
