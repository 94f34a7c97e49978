"""The continuous actor: action scaling, warm-up, noise, drained items and priorities; the builder's schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shoal.agents.continuous.builder import ContinuousBuilder
from shoal.agents.continuous.config import ApexDDPGConfig, DDPGConfig, SACConfig, TD3Config
from shoal.agents.continuous.noise import GaussianNoise, OrnsteinUhlenbeckNoise
from shoal.core.schedules import per_actor_exponent
from shoal.core.types import EnvSpec, StepResult
from shoal.envs.make import env_spec
from shoal.errors import ConfigError

SPEC = EnvSpec("box", (3,), np.dtype(np.float32), False, 2, np.array([-2.0, 0.0], np.float32),
               np.array([2.0, 10.0], np.float32))


def _step(b: int, done: bool = False) -> StepResult:
    obs = np.random.default_rng(0).standard_normal((b, 3)).astype(np.float32)
    d = np.full(b, done)
    return StepResult(obs, np.ones(b, np.float32), np.zeros(b, bool), d, obs)


@pytest.mark.parametrize("cfg", [DDPGConfig(hidden=(8,), learning_starts=0), SACConfig(hidden=(8,), learning_starts=0)])
def test_env_gets_scaled_actions_and_replay_gets_unit_ones(cfg) -> None:
    b = ContinuousBuilder(cfg, SPEC)
    actor = b.make_actor(b.make_networks(), num_envs=4, seed=1)
    obs = np.zeros((4, 3), np.float32)
    actor.observe_first(obs)
    env_action = actor.select_action(obs)
    assert ((env_action >= SPEC.action_low) & (env_action <= SPEC.action_high)).all()
    actor.observe(env_action, _step(4))
    items = actor.drain()
    unit = items["action"]
    assert unit.shape == (4, 2) and (np.abs(unit) <= 1).all()
    assert np.allclose(env_action, np.array([0.0, 5.0]) + np.array([2.0, 5.0]) * unit, atol=1e-5)
    assert set(items) == {"obs", "action", "reward", "discount", "next_obs"}


def test_random_warmup_then_policy() -> None:
    b = ContinuousBuilder(DDPGConfig(hidden=(8,), learning_starts=6, noise_sigma=0.0), SPEC)
    net = b.make_networks()
    actor = b.make_actor(net, num_envs=2, actor_id=0, num_actors=1, seed=0)
    obs = np.zeros((2, 3), np.float32)
    actor.observe_first(obs)
    policy_action = net.scale_action(net.mode(torch.from_numpy(obs))).numpy()
    for t in range(5):
        a = actor.select_action(obs)
        assert (t < 3) != np.allclose(a, policy_action, atol=1e-6)  # 3 vector steps x 2 copies = 6 random steps
        actor.observe(a, _step(2))
    # with several actors each takes its share of the warm-up
    assert b.make_actor(net, 1, 1, 3, 0).random_steps == 2


def test_ou_noise_is_correlated_and_resets_per_copy() -> None:
    noise = OrnsteinUhlenbeckNoise(0.3, (2, 1), np.random.default_rng(0), theta=0.15, dt=0.01)
    xs = np.array([noise()[:, 0] for _ in range(500)])
    assert np.corrcoef(xs[:-1, 0], xs[1:, 0])[0, 1] > 0.9
    noise.reset(np.array([True, False]))
    assert noise.x[0, 0] == 0.0 and noise.x[1, 0] != 0.0
    g = GaussianNoise(0.5, (20000,), np.random.default_rng(0))()
    assert abs(g.std() - 0.5) < 0.02 and abs(np.corrcoef(g[:-1], g[1:])[0, 1]) < 0.05


def test_per_actor_noise_scales_spread_like_apex_epsilons() -> None:
    assert per_actor_exponent(0.3, 0, 1, 3.0) == pytest.approx(0.3)
    assert per_actor_exponent(0.3, 0, 4, 3.0) == pytest.approx(0.3)
    assert per_actor_exponent(0.3, 3, 4, 3.0) == pytest.approx(0.3 ** 4)
    sig = [per_actor_exponent(0.3, i, 8, 3.0) for i in range(8)]
    assert all(a > b for a, b in zip(sig, sig[1:]))
    assert per_actor_exponent(0.3, 5, 8, 0.0) == pytest.approx(0.3)
    cfg = ApexDDPGConfig(hidden=(8,), noise_sigma=0.3, actor_noise_alpha=3.0)
    b = ContinuousBuilder(cfg, env_spec("Pendulum-v1"))
    assert [b.make_actor(b.make_networks(), 1, i, 4, i).sigma for i in range(4)] == pytest.approx(
        [0.3 ** (1 + 3.0 * i / 3) for i in range(4)])


def test_actor_priorities_match_the_learner_td_error() -> None:
    cfg = ApexDDPGConfig(hidden=(8,), n_step=1, learning_starts=0)
    b = ContinuousBuilder(cfg, env_spec("Pendulum-v1"))
    net = b.make_networks()
    actor = b.make_actor(net, num_envs=3, seed=0)
    obs = np.zeros((3, 3), np.float32)
    actor.observe_first(obs)
    actor.observe(actor.select_action(obs), _step(3))
    items = actor.drain()
    assert items["priority"].shape == (3,) and (items["priority"] > 0).all()
    with torch.no_grad():
        nxt = torch.from_numpy(items["next_obs"])
        y = torch.from_numpy(items["reward"]) + torch.from_numpy(items["discount"]) * net.critic_target(
            nxt, net.policy_target(nxt))[0]
        q = net.critic(torch.from_numpy(items["obs"]), torch.from_numpy(items["action"]))[0]
    assert np.allclose(items["priority"], (q - y).abs().numpy() + cfg.priority_eps, atol=1e-5)


def test_actor_state_round_trip() -> None:
    b = ContinuousBuilder(DDPGConfig(hidden=(8,), noise="ou", learning_starts=0), SPEC)
    net = b.make_networks()
    a1 = b.make_actor(net, 2, seed=5)
    obs = np.zeros((2, 3), np.float32)
    a1.observe_first(obs)
    a1.observe(a1.select_action(obs), _step(2))
    state = a1.state()
    nxt = a1.select_action(obs)
    a2 = b.make_actor(net, 2, seed=99)
    a2.load_state(state)
    a2.observe_first(obs)
    a2.noise.x[...] = state["noise"]["x"]  # observe_first restarts the noise; restore it to compare
    assert np.allclose(a2.select_action(obs), nxt)


def test_load_variables_accepts_acting_subset_and_skips_same_version() -> None:
    b = ContinuousBuilder(SACConfig(hidden=(8,)), SPEC)
    src, dst = b.make_networks(), b.make_networks()
    actor = b.make_actor(dst, 1)
    acting = {k: v for k, v in src.state_dict().items() if k in src.acting_keys}
    actor.load_variables(3, acting)
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in acting.items())
    with torch.no_grad():
        src.policy.net[0].weight.add_(1.0)
    actor.load_variables(3, {k: v for k, v in src.state_dict().items() if k in src.acting_keys})
    assert not torch.equal(dst.policy.net[0].weight, src.policy.net[0].weight)  # same version: skipped


@pytest.mark.parametrize("env_steps, done, expected", [(999, 0, 0), (1000, 0, 0), (1001, 0, 1), (1500, 200, 300)])
def test_learner_steps_due_follows_learning_starts(env_steps: int, done: int, expected: int) -> None:
    b = ContinuousBuilder(SACConfig(learning_starts=1000), SPEC)
    assert b.learner_steps_due(env_steps, done) == expected


def test_learner_steps_due_follows_the_replay_ratio() -> None:
    b = ContinuousBuilder(TD3Config(learning_starts=0, replay_ratio=0.25), SPEC)
    done = 0
    for env_steps in range(1, 101):
        done += b.learner_steps_due(env_steps, done)
    assert done == 25
    b4 = ContinuousBuilder(TD3Config(learning_starts=0, replay_ratio=4.0), SPEC)
    assert b4.learner_steps_due(10, 0) == 40


def test_config_validation_messages() -> None:
    with pytest.raises(ConfigError, match="actor_priorities"):
        DDPGConfig(actor_priorities=True)
    with pytest.raises(ConfigError, match="tau"):
        SACConfig(tau=0.0)
    with pytest.raises(ConfigError, match="hidden"):
        TD3Config(hidden=())
    with pytest.raises(ConfigError, match="noise_sigma < 1"):
        DDPGConfig(actor_noise_alpha=2.0, noise_sigma=1.5)


def test_prioritized_tables() -> None:
    from shoal.data import Prioritized, Uniform

    assert isinstance(ContinuousBuilder(SACConfig(), SPEC).make_tables()["replay"].selector, Uniform)
    table = ContinuousBuilder(SACConfig(prioritized=True, priority_alpha=0.5), SPEC).make_tables()["replay"]
    assert isinstance(table.selector, Prioritized) and table.selector.alpha == 0.5
