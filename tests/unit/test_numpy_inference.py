"""The off-policy actors' numpy inference path gives what the torch path gives, for the same parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shoal.agents.continuous.actor import ContinuousActor, ContinuousPolicy, NumpyPolicy
from shoal.agents.continuous.builder import ContinuousBuilder
from shoal.agents.continuous.config import DDPGConfig, SACConfig, TD3Config
from shoal.agents.dqn.actor import DQNActor, EpsilonGreedyPolicy, NumpyQ, TorchQ, q_function
from shoal.agents.dqn.builder import DQNBuilder
from shoal.agents.dqn.config import DQNConfig
from shoal.envs import env_spec
from shoal.nets.numpy_mlp import NumpyMLP, linear_layers
from shoal.nets.optim import FlatParams


def _obs(spec, n: int = 33, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *spec.obs_shape)).astype(np.float32) * 2


@pytest.mark.parametrize("variant", [dict(), dict(dueling=True), dict(dueling=True, head_hidden=16),
                                     dict(head_hidden=8, activation="tanh"), dict(hidden=(32,), activation="tanh")])
def test_numpy_q_values_and_greedy_actions_match_torch(variant: dict) -> None:
    torch.manual_seed(0)
    spec = env_spec("CartPole-v1")
    net = DQNBuilder(DQNConfig(**variant), spec).make_networks()
    assert NumpyQ.supports(net)
    obs = _obs(spec)
    q_np = NumpyQ(net)(obs)
    q_t = TorchQ(net)(obs)
    np.testing.assert_allclose(q_np, q_t, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(q_np.argmax(-1), q_t.argmax(-1))
    greedy_np = EpsilonGreedyPolicy(net, 0.0, engine="numpy")(obs)
    greedy_t = EpsilonGreedyPolicy(net, 0.0, engine="torch")(obs)
    np.testing.assert_array_equal(greedy_np, greedy_t)


def test_dqn_actor_uses_numpy_and_takes_the_torch_actions() -> None:
    torch.manual_seed(1)
    spec = env_spec("CartPole-v1")
    cfg = DQNConfig(epsilon_start=0.3, epsilon_final=0.3)
    b = DQNBuilder(cfg, spec, total_steps=1000)
    fast = DQNActor(b.make_networks(), cfg, 4, seed=5, total_steps=1000)
    slow = DQNActor(b.make_networks(), cfg, 4, seed=5, total_steps=1000, engine="torch")
    assert isinstance(fast.q, NumpyQ) and isinstance(slow.q, TorchQ)
    sd = fast.net.state_dict()
    slow.load_variables(0, sd)
    for i in range(20):  # same seed, same params: same explore draws and the same greedy actions
        obs = _obs(spec, 4, seed=i)
        np.testing.assert_array_equal(fast.select_action(obs), slow.select_action(obs))


def test_dqn_image_and_elu_networks_fall_back_to_torch() -> None:
    spec = env_spec("CartPole-v1")
    assert isinstance(q_function(DQNBuilder(DQNConfig(activation="elu"), spec).make_networks()), TorchQ)


def _continuous(cfg, normalize: bool = True):
    torch.manual_seed(2)
    spec = env_spec("Pendulum-v1")
    b = ContinuousBuilder(cfg, spec, total_steps=1000)
    net = b.make_networks()
    if normalize:
        net.obs_norm.update(torch.randn(200, 3) * 4 + 1)
    return spec, net


@pytest.mark.parametrize("cfg", [DDPGConfig(normalize_obs=True), TD3Config(activation="tanh"),
                                 SACConfig(normalize_obs=True), SACConfig(hidden=(32, 16), activation="tanh")])
def test_numpy_policy_outputs_match_torch(cfg) -> None:
    spec, net = _continuous(cfg, cfg.normalize_obs)
    assert NumpyPolicy.supports(net)
    obs = _obs(spec)
    out = NumpyPolicy(net)(obs)
    with torch.inference_mode():
        ref = net.policy(net.normalize(torch.from_numpy(obs)))
    if net.stochastic:  # the same distribution parameters
        np.testing.assert_allclose(out[0], ref[0].numpy(), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(out[1], ref[1].numpy(), atol=1e-5, rtol=1e-5)
    else:
        np.testing.assert_allclose(out, ref.numpy(), atol=1e-5, rtol=1e-5)
    # Deterministic evaluation actions in env units: numpy path == torch path.
    fast, slow = ContinuousPolicy(net, True), ContinuousPolicy(net, True, engine="torch")
    assert fast.fast is not None and slow.fast is None
    np.testing.assert_allclose(fast(obs), slow(obs), atol=1e-5, rtol=1e-5)


def test_sac_actor_samples_from_the_numpy_distribution() -> None:
    """The actor's action is tanh(mean + std * noise) of the numpy policy's parameters."""
    cfg = SACConfig(normalize_obs=True)
    spec, net = _continuous(cfg)
    actor = ContinuousActor(net, cfg, 5, seed=3)
    assert actor.fast is not None
    obs = _obs(spec, 5)
    mean, log_std = actor.fast(obs)
    noise = np.random.default_rng(3).standard_normal(mean.shape, dtype=np.float32)
    a = actor.select_action(obs)
    np.testing.assert_allclose(a, np.asarray(spec.action_high) * np.tanh(mean + np.exp(log_std) * noise), atol=1e-5)


def test_deterministic_actor_numpy_and_torch_paths_take_the_same_actions() -> None:
    cfg = TD3Config(noise_sigma=0.2)
    spec, net = _continuous(cfg, normalize=False)
    fast = ContinuousActor(net, cfg, 3, seed=4, sigma=0.2)
    slow = ContinuousActor(net, cfg, 3, seed=4, sigma=0.2, engine="torch")
    assert fast.fast is not None and slow.fast is None
    for i in range(10):  # same noise generator state, same policy: same actions
        obs = _obs(spec, 3, seed=i)
        np.testing.assert_allclose(fast.select_action(obs), slow.select_action(obs), atol=1e-5)


def test_actor_rebuilds_views_when_parameters_are_repointed() -> None:
    cfg = SACConfig()
    spec, net = _continuous(cfg, normalize=False)
    actor = ContinuousActor(net, cfg, 2, seed=0)
    FlatParams(net.policy.parameters())  # re-points every policy parameter into a new buffer
    assert actor.fast is not None and not actor.fast.current()
    with torch.no_grad():
        for p in net.policy.parameters():
            p.add_(0.05)
    actor.load_variables(1, {k: v.clone() for k, v in net.state_dict().items() if k in net.acting_keys})
    assert actor.fast.current()
    obs = _obs(spec, 2)
    with torch.inference_mode():
        ref = net.policy(net.normalize(torch.from_numpy(obs)))[0].numpy()
    np.testing.assert_allclose(actor.fast(obs)[0], ref, atol=1e-5, rtol=1e-5)


def test_numpy_mlp_sees_in_place_parameter_copies() -> None:
    lin = torch.nn.Linear(3, 2)
    mlp = NumpyMLP(linear_layers([lin]), None, source=[lin.weight])
    x = np.ones((1, 3), np.float32)
    with torch.no_grad():
        lin.weight.copy_(torch.full((2, 3), 2.0))
        lin.bias.zero_()
    np.testing.assert_allclose(mlp(x), [[6.0, 6.0]])
    assert mlp.current()
