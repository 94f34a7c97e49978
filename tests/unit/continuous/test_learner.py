"""Learner steps against a plain reference update, replay bookkeeping and checkpoints.

The reference networks run as plain torch layers (``nn.Linear``/``torch.baddbmm`` with the
activation), never through :mod:`~shoal.agents.continuous.fused`: a guard makes any fused
layer call inside a reference computation fail.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shoal.agents.continuous import networks
from shoal.agents.continuous.builder import ContinuousBuilder
from shoal.agents.continuous.config import DDPGConfig, SACConfig, TD3Config
from shoal.envs.make import env_spec

B = 32
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh}


def _items(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"obs": rng.standard_normal((n, 3), dtype=np.float32),
            "action": rng.uniform(-1, 1, (n, 1)).astype(np.float32),
            "reward": rng.standard_normal(n, dtype=np.float32),
            "discount": rng.choice([0.0, 0.99], n).astype(np.float32),
            "next_obs": rng.standard_normal((n, 3), dtype=np.float32)}


def _setup(cfg):
    b = ContinuousBuilder(cfg, env_spec("Pendulum-v1"), total_steps=1000, seed=3)
    net = b.make_networks()
    ref = copy.deepcopy(net)
    # The reference runs plain torch layers: nn.Sequential policies, per-layer critics.
    ref.critic.relu = ref.critic_target.relu = False
    for policy in (ref.policy, ref.policy_target):
        if policy is not None:
            policy.linears = None
    tables = b.make_tables()
    learner = b.make_learner(net, tables)
    table = tables["replay"]
    table.insert(_items(B))
    return learner, net, ref, table


def _sampled_batch(table) -> dict[str, torch.Tensor]:
    """The batch the learner's next sample will draw (same selector RNG state)."""
    rng_state = copy.deepcopy(table.selector.rng.bit_generator.state)
    items, _, _ = table.sample(B)
    table.selector.rng.bit_generator.state = rng_state
    return {k: torch.from_numpy(v) for k, v in items.items()}


@contextlib.contextmanager
def _plain_only() -> Iterator[None]:
    """Any network call that would run through fused.py's layers raises inside this block."""
    def forbidden(*args: Any) -> torch.Tensor:
        raise AssertionError("the plain reference ran a fused layer")
    with mock.patch.object(networks, "relu_mlp", forbidden), mock.patch.object(networks, "ensemble_relu_mlp",
                                                                               forbidden):
        yield


def _q(critic, obs, act, activation, detach=False):
    x = torch.cat([obs, act], -1).expand(critic.k, -1, -1)
    for i, layer in enumerate(critic.layers):
        w, b = (layer.weight.detach(), layer.bias.detach()) if detach else (layer.weight, layer.bias)
        x = torch.baddbmm(b, x, w)
        if i < len(critic.layers) - 1:
            x = ACTIVATIONS[activation](x)
    return x.squeeze(-1)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_sac_step_matches_a_plain_reference_update(activation) -> None:
    cfg = SACConfig(hidden=(16, 16), batch_size=B, actor_lr=3e-3, critic_lr=2e-3, alpha_lr=1e-2, tau=0.1,
                    activation=activation)
    learner, net, ref, table = _setup(cfg)
    # Hand-written gradients cover ReLU networks only; tanh ones take the autograd path.
    assert (learner.fused is None) == (activation == "tanh")
    opt = torch.optim.Adam([{"params": ref.critic.parameters(), "lr": 2e-3},
                            {"params": ref.policy.parameters(), "lr": 3e-3},
                            {"params": [ref.log_alpha], "lr": 1e-2}], eps=cfg.adam_eps)
    gen = torch.Generator().manual_seed(learner.gen.initial_seed())
    for _ in range(3):
        b = _sampled_batch(table)
        assert set(learner.step()) == {"loss_critic", "q", "alpha", "loss_actor", "entropy", "nonfinite_updates"}
        alpha = ref.log_alpha.detach().exp()
        with _plain_only():
            with torch.no_grad():
                m, ls = ref.policy(b["next_obs"])
                u = m + ls.exp() * torch.randn(m.shape, generator=gen)
                na = torch.tanh(u)
                nlp = torch.distributions.Normal(m, ls.exp()).log_prob(u).sum(-1) - torch.log(1 - na.pow(2) + 1e-12).sum(-1)
                y = b["reward"] + b["discount"] * (_q(ref.critic_target, b["next_obs"], na, activation).min(0).values
                                                   - alpha * nlp)
            q = _q(ref.critic, b["obs"], b["action"], activation)
            loss_c = 0.5 * ((q - y) ** 2).mean(-1).sum()
            m, ls = ref.policy(b["obs"])
            u = m + ls.exp() * torch.randn(m.shape, generator=gen)
            a = torch.tanh(u)
            lp = torch.distributions.Normal(m, ls.exp()).log_prob(u).sum(-1) - torch.log(1 - a.pow(2) + 1e-12).sum(-1)
            loss_pi = (alpha * lp - _q(ref.critic, b["obs"], a, activation, detach=True).min(0).values).mean()
            loss_alpha = -(ref.log_alpha * (lp.detach() - 1.0)).mean()
            opt.zero_grad()
            (loss_c + loss_pi + loss_alpha).backward()
            opt.step()
            with torch.no_grad():
                for t, o in zip(ref.critic_target.parameters(), ref.critic.parameters()):
                    t.mul_(0.9).add_(0.1 * o)
    for (k, v), (_, r) in zip(net.state_dict().items(), ref.state_dict().items()):
        assert torch.allclose(v, r, atol=1e-5), k


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("cfg_cls", [DDPGConfig, TD3Config])
def test_dpg_step_matches_a_plain_reference_update(cfg_cls, activation) -> None:
    cfg = cfg_cls(hidden=(16,), batch_size=B, actor_lr=3e-3, critic_lr=2e-3, tau=0.1, activation=activation)
    learner, net, ref, table = _setup(cfg)
    opt_c = torch.optim.Adam(ref.critic.parameters(), lr=2e-3)
    opt_p = torch.optim.Adam(ref.policy.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(learner.gen.initial_seed())
    for step in range(4):
        b = _sampled_batch(table)
        learner.step()
        with _plain_only():
            with torch.no_grad():
                na = ref.policy_target(b["next_obs"])
                if cfg.target_noise > 0:
                    noise = (torch.randn(na.shape, generator=gen) * cfg.target_noise).clamp(-0.5, 0.5)
                    na = (na + noise).clamp(-1, 1)
                y = b["reward"] + b["discount"] * _q(ref.critic_target, b["next_obs"], na, activation).min(0).values
            loss = 0.5 * ((_q(ref.critic, b["obs"], b["action"], activation) - y) ** 2).mean(-1).sum()
            update_policy = step % cfg.policy_delay == 0
            if update_policy:
                loss = loss - _q(ref.critic, b["obs"], ref.policy(b["obs"]), activation, detach=True)[0].mean()
            opt_c.zero_grad()
            opt_p.zero_grad()
            loss.backward()
            opt_c.step()
            if update_policy:
                opt_p.step()
                with torch.no_grad():
                    for t, o in zip([*ref.critic_target.parameters(), *ref.policy_target.parameters()],
                                    [*ref.critic.parameters(), *ref.policy.parameters()]):
                        t.lerp_(o, 0.1)
    for (k, v), (_, r) in zip(net.state_dict().items(), ref.state_dict().items()):
        assert torch.allclose(v, r, atol=1e-5), k


def test_prioritized_step_updates_priorities_and_uses_weights() -> None:
    cfg = SACConfig(hidden=(8,), batch_size=B, prioritized=True)
    learner, _, _, table = _setup(cfg)
    before = table.selector.tree.get(np.arange(B)).copy()
    learner.step()
    after = table.selector.tree.get(np.arange(B))
    assert not np.allclose(before, after)
    assert learner.beta(0) == pytest.approx(0.4) and learner.beta(10_000) == pytest.approx(1.0)


def test_empty_table_step_is_a_no_op() -> None:
    b = ContinuousBuilder(SACConfig(hidden=(8,), n_step=3), env_spec("Pendulum-v1"))
    learner = b.make_learner(b.make_networks(), b.make_tables())
    assert learner.step() == {} and learner.steps == 0


@pytest.mark.parametrize("cfg", [SACConfig(hidden=(8,), batch_size=B), TD3Config(hidden=(8,), batch_size=B)])
def test_state_round_trip_continues_identically(cfg) -> None:
    learner, net, _, table = _setup(cfg)
    learner.step()
    state = copy.deepcopy(learner.state())
    table_state = copy.deepcopy(table.state())
    learner.step()
    learner.step()
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    learner2, net2, _, table2 = _setup(cfg)
    learner2.load_state(state)
    table2.load_state(table_state)
    learner2.step()
    learner2.step()
    for k, v in net2.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_variables_are_snapshots_of_the_acting_part() -> None:
    learner, net, _, _ = _setup(SACConfig(hidden=(8,), batch_size=B))
    version, variables = learner.get_variables()
    assert version == 0 and set(variables) == set(net.acting_keys)
    snapshot = {k: v.clone() for k, v in variables.items()}
    learner.step()
    assert all(torch.equal(variables[k], snapshot[k]) for k in variables)  # not mutated afterwards
    v2, variables2 = learner.get_variables()
    assert v2 == 1 and not all(torch.equal(variables2[k], snapshot[k]) for k in variables)
