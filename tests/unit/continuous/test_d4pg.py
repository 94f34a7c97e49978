"""D4PG: the categorical critic loss and priorities against hand values, a learner step against a plain
reference update, periodic targets, actor priorities, checkpoints, builder hooks and the Ape-X wiring."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import shoal
from shoal.agents import registry
from shoal.agents.continuous.builder import ContinuousBuilder
from shoal.agents.continuous.config import ApexD4PGConfig, D4PGConfig
from shoal.agents.continuous.learner import D4PGLearner
from shoal.agents.continuous.loss import categorical_critic_loss
from shoal.agents.continuous.targets import td_priorities
from shoal.backends.inprocess import InProcessBackend
from shoal.config import build, to_dict
from shoal.core.types import StepResult
from shoal.data import importance_weights
from shoal.envs.make import env_spec
from shoal.errors import ConfigError
from shoal.io.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from shoal.returns.categorical import categorical_projection
from shoal.settings import RunConfig
from shoal.topologies.apex import ApexProgram
from shoal.topologies.nodes import NodeContext

B = 32
SPEC = env_spec("Pendulum-v1")


def _cfg(**kw) -> D4PGConfig:
    base = {"hidden": (16,), "batch_size": B, "actor_lr": 3e-3, "critic_lr": 2e-3, "tau": 0.1, "num_atoms": 11,
            "v_min": -4.0, "v_max": 4.0, "prioritized": False}
    return D4PGConfig(**{**base, **kw})


def _items(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"obs": rng.standard_normal((n, 3), dtype=np.float32),
            "action": rng.uniform(-1, 1, (n, 1)).astype(np.float32),
            "reward": (2 * rng.standard_normal(n)).astype(np.float32),
            "discount": rng.choice([0.0, 0.99], n).astype(np.float32),
            "next_obs": rng.standard_normal((n, 3), dtype=np.float32)}


def _setup(cfg: D4PGConfig, seed: int = 3):
    b = ContinuousBuilder(cfg, SPEC, total_steps=1000, seed=seed)
    net = b.make_networks()
    tables = b.make_tables()
    learner = b.make_learner(net, tables)
    table = tables["replay"]
    table.insert(_items(B))
    return learner, net, table


def _next_sample(table):
    """``(items, keys, probs)`` of the learner's next sample (the selector's RNG state is put back)."""
    rng_state = copy.deepcopy(table.selector.rng.bit_generator.state)
    items, keys, probs = table.sample(B)
    table.selector.rng.bit_generator.state = rng_state
    return {k: torch.from_numpy(v) for k, v in items.items()}, keys, probs


def _plain_logits(critic, obs, act, detach=False) -> torch.Tensor:
    """The first critic's logits ``[B, N]`` through plain batched matmuls and ReLUs."""
    x = torch.cat([obs, act], -1).expand(critic.k, -1, -1)
    for i, layer in enumerate(critic.layers):
        w, b = (layer.weight.detach(), layer.bias.detach()) if detach else (layer.weight, layer.bias)
        x = torch.baddbmm(b, x, w)
        if i < len(critic.layers) - 1:
            x = torch.relu(x)
    return x[0]


# -- the loss and its priorities -------------------------------------------------------------------
def test_categorical_critic_loss_and_priorities_hand_computed() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [1.0, 1.0, 1.0]]))  # softmax: [.5, .25, .25], uniform
    target = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    loss, kl = categorical_critic_loss(logits, target)
    # The loss is the cross-entropy: -log .5 and -(.5 + .5) log(1/3).
    assert loss.item() == pytest.approx((math.log(2.0) + math.log(3.0)) / 2)
    # The priorities are the KL divergences: CE minus the target's entropy (0 and log 2).
    assert torch.allclose(kl, torch.tensor([math.log(2.0), math.log(3.0) - math.log(2.0)]))
    weighted, kl_w = categorical_critic_loss(logits, target, torch.tensor([2.0, 0.5]))
    assert weighted.item() == pytest.approx((2.0 * math.log(2.0) + 0.5 * math.log(3.0)) / 2)
    assert torch.equal(kl_w, kl)  # priorities do not carry the importance weights
    # A critic that already equals its target has priority 0, however spread the target is.
    spread = torch.tensor([[0.2, 0.3, 0.5]])
    assert categorical_critic_loss(torch.log(spread), spread)[1].item() == pytest.approx(0.0, abs=1e-6)
    # The gradient of the cross-entropy in the logits is softmax - target.
    logits = logits.clone().requires_grad_(True)
    categorical_critic_loss(logits, target)[0].backward()
    assert logits.grad is not None
    assert torch.allclose(logits.grad, (torch.softmax(logits.detach(), -1) - target) / 2)


# -- the learner ---------------------------------------------------------------------------------
@pytest.mark.parametrize("prioritized", [False, True])
def test_d4pg_step_matches_a_plain_reference_update(prioritized: bool) -> None:
    """Projection, weighted cross-entropy, DPG on the critic's mean, Adam and Polyak, written out plainly."""
    cfg = _cfg(prioritized=prioritized)
    learner, net, table = _setup(cfg)
    assert isinstance(learner, D4PGLearner)
    ref = copy.deepcopy(net)
    ref.policy.linears = ref.policy_target.linears = None  # nn.Sequential policies, not fused.py
    z = torch.linspace(-4.0, 4.0, 11)
    opt_c = torch.optim.Adam(ref.critic.parameters(), lr=2e-3)
    opt_p = torch.optim.Adam(ref.policy.parameters(), lr=3e-3)
    for step in range(3):
        b, keys, probs = _next_sample(table)
        metrics = learner.step()
        with torch.no_grad():
            next_probs = torch.softmax(_plain_logits(ref.critic_target, b["next_obs"],
                                                     ref.policy_target(b["next_obs"])), -1)
            target = categorical_projection(next_probs, b["reward"], b["discount"], z)
        log_p = torch.log_softmax(_plain_logits(ref.critic, b["obs"], b["action"]), -1)
        ce = -(target * log_p).sum(-1)
        w = (torch.from_numpy(importance_weights(probs, B, learner.beta(step))) if prioritized
             else torch.ones(B))
        loss_c = (w * ce).mean()
        q_pi = (torch.softmax(_plain_logits(ref.critic, b["obs"], ref.policy(b["obs"]), detach=True), -1) * z).sum(-1)
        loss_pi = -q_pi.mean()
        assert metrics["loss_critic"].item() == pytest.approx(loss_c.item(), rel=1e-5)
        assert metrics["loss_actor"].item() == pytest.approx(loss_pi.item(), rel=1e-5, abs=1e-6)
        opt_c.zero_grad()
        opt_p.zero_grad()
        (loss_c + loss_pi).backward()
        opt_c.step()
        opt_p.step()
        with torch.no_grad():
            for t, o in zip([*ref.critic_target.parameters(), *ref.policy_target.parameters()],
                            [*ref.critic.parameters(), *ref.policy.parameters()]):
                t.lerp_(o, 0.1)
        if prioritized:  # the sampled items' new priorities: their KL divergences before the update, plus eps
            got = _priorities_of(table, keys)
            kl = ce - (-(target * torch.log(target.clamp_min(1e-12))).sum(-1))
            assert np.allclose(got, (kl.detach().double().numpy() + cfg.priority_eps) ** cfg.priority_alpha,
                               rtol=1e-5, atol=1e-7)
    for (k, v), (_, r) in zip(net.state_dict().items(), ref.state_dict().items()):
        assert torch.allclose(v, r, atol=1e-5), k


def _priorities_of(table, keys: np.ndarray) -> np.ndarray:
    """The sum tree's leaves (``priority ** alpha``) of the items ``keys``."""
    slots, live = table.index.lookup(keys)
    assert live.all()
    return table.selector.tree.get(slots)


def test_periodic_targets_copy_every_period_and_stay_fixed_between() -> None:
    learner, net, _ = _setup(_cfg(target_update_period=3))
    start = {k: v.clone() for k, v in net.state_dict().items() if k.startswith(("critic_target.", "policy_target."))}
    for step in range(1, 7):
        learner.step()
        targets = {k: v for k, v in net.state_dict().items() if k in start}
        online = net.state_dict()
        if step % 3 == 0:
            assert all(torch.equal(v, online[k.replace("_target", "")]) for k, v in targets.items())
            start = {k: v.clone() for k, v in targets.items()}
        else:
            assert all(torch.equal(v, start[k]) for k, v in targets.items())
            assert not all(torch.equal(v, online[k.replace("_target", "")]) for k, v in targets.items())


def test_state_round_trip_through_a_checkpoint_file_continues_identically(tmp_path: Path) -> None:
    cfg = _cfg(prioritized=True, target_update_period=2)
    learner, net, table = _setup(cfg)
    learner.step()
    path = tmp_path / "ckpt-000000000001"
    save_checkpoint(path, {"learner": learner.state(), "table": table.state()})
    learner.step()
    learner.step()
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    learner2, net2, table2 = _setup(cfg)
    tree, _ = load_checkpoint(path)
    learner2.load_state(tree["learner"])
    table2.load_state(tree["table"])
    assert learner2.policy_updates == 1 and learner2.steps == 1
    learner2.step()
    learner2.step()
    assert learner2.policy_updates == 3
    for k, v in net2.state_dict().items():
        assert torch.equal(v, expected[k]), k


# -- actors --------------------------------------------------------------------------------------
def test_actor_priorities_are_the_learner_kl_divergences() -> None:
    cfg = ApexD4PGConfig(hidden=(8,), n_step=1, learning_starts=0, num_atoms=11, v_min=-4.0, v_max=4.0)
    b = ContinuousBuilder(cfg, SPEC)
    net = b.make_networks()
    assert net.support is not None and torch.equal(net.support, torch.linspace(-4.0, 4.0, 11))
    actor = b.make_actor(net, num_envs=3, seed=0)
    obs = np.zeros((3, 3), np.float32)
    nxt = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)
    actor.observe_first(obs)
    actor.observe(actor.select_action(obs), StepResult(nxt, np.array([-1.0, 0.5, 2.0], np.float32),
                                                       np.array([False, True, False]), np.zeros(3, bool), nxt))
    items = actor.drain()
    assert items is not None and items["priority"].shape == (3,)
    with torch.no_grad():
        n_obs = torch.from_numpy(items["next_obs"])
        next_probs = torch.softmax(net.critic_target(n_obs, net.policy_target(n_obs))[0], -1)
        target = categorical_projection(next_probs, torch.from_numpy(items["reward"]),
                                        torch.from_numpy(items["discount"]), net.support)
        log_p = torch.log_softmax(net.critic(torch.from_numpy(items["obs"]), torch.from_numpy(items["action"]))[0], -1)
    kl = -(target * log_p).sum(-1) + (target * torch.log(target.clamp_min(1e-12))).sum(-1)
    assert np.allclose(items["priority"], kl.numpy() + cfg.priority_eps, atol=1e-6)


# -- config and builder hooks --------------------------------------------------------------------
def test_config_validation_messages() -> None:
    with pytest.raises(ConfigError, match="v_max must be > v_min"):
        D4PGConfig(v_min=0.0, v_max=0.0)
    with pytest.raises(ConfigError, match="num_atoms must be >= 2"):
        D4PGConfig(num_atoms=1)
    with pytest.raises(ConfigError, match="one distributional critic"):
        D4PGConfig(num_critics=2)
    with pytest.raises(ConfigError, match="target_update_period"):
        D4PGConfig(target_update_period=-1)


def test_defaults_follow_the_paper_and_the_pendulum_file() -> None:
    cfg = D4PGConfig()
    assert (cfg.num_atoms, cfg.n_step, cfg.prioritized, cfg.num_critics) == (51, 5, True, 1)
    apex = ApexD4PGConfig()
    assert apex.actor_priorities and apex.prioritized and apex.actor_noise_alpha > 0
    pend = registry.get("d4pg").defaults("Pendulum-v1")
    assert pend["gamma"] == 0.98 and pend["v_max"] == 0.0
    # Discounted Pendulum returns (rewards in [-16.27, 0]) lie above -16.27 / (1 - gamma) = -813.7. The support stops
    # within 2% of that bound: only the worst reward at every step forever (never reached) would be clipped.
    bound = -16.2736044 / (1 - pend["gamma"])
    assert bound < pend["v_min"] <= 0.98 * bound and pend["v_max"] == 0.0


@pytest.mark.parametrize("algo, topology", [("d4pg", "local"), ("apex_d4pg", "apex")])
def test_registered_builders_declare_their_replay_settings(algo: str, topology: str) -> None:
    spec = registry.get(algo)
    assert spec.topology == topology
    builder = spec.builder_cls()(build(spec.config_cls(), {"batch_size": 48, "checkpoint_replay": False,
                                                           "learning_starts": 100, "replay_ratio": 0.5,
                                                           "actor_update_period": 7, "batches_per_call": 3}),
                                 SPEC, total_steps=1000)
    assert builder.replay_batch_size == 48 and builder.checkpoint_replay is False
    assert builder.replay_rate == (24.0, 101)
    assert builder.actor_pull_period == 7 and builder.batches_per_call == 3
    assert isinstance(builder.make_learner(builder.make_networks(), builder.make_tables()), D4PGLearner)


# -- the Ape-X topology --------------------------------------------------------------------------
def test_apex_actors_store_their_kl_priorities_in_the_replay_node() -> None:
    """Before learning starts every stored priority is the actor's: the KL divergence under the
    initial networks (which every actor holds), recomputed here from the stored items."""
    cfg = ApexD4PGConfig(hidden=(8,), num_envs=2, n_step=3, actor_update_period=10, batch_size=16,
                         learning_starts=10_000, num_atoms=11, v_min=-100.0, v_max=0.0)
    ctx = NodeContext("apex_d4pg", to_dict(cfg), "Pendulum-v1", SPEC, 2000, 0)
    program = ApexProgram(ctx, RunConfig(steps=2000, seed=0, num_actors=2), InProcessBackend())
    try:
        program.run_iteration()
        table = program.replay.node.table
        slots = table.index.live_slots()
        assert len(slots) > 0 and program.learner_steps == 0
        items = table.storage.read(slots)
        net = program.learner.node.networks
        expected = td_priorities(net, cfg, items, None, cfg.priority_eps)
        leaves = table.selector.tree.get(slots)
        assert np.allclose(leaves, expected ** cfg.priority_alpha, rtol=1e-5)
        assert np.ptp(leaves) > 0
    finally:
        program.close()


# -- runs through the runner ---------------------------------------------------------------------
OVR = {"hidden": [16, 16], "batch_size": 32, "learning_starts": 200, "buffer_size": 5000, "eval_episodes": 2}


def test_apex_d4pg_trains_and_evaluates_in_process(tmp_path: Path) -> None:
    run = shoal.train("apex_d4pg", "Pendulum-v1", steps=800, seed=0, num_actors=2, run_dir=tmp_path / "apex",
                      quiet=True, tensorboard=False, overrides={**OVR, "actor_update_period": 20})
    assert run.env_steps >= 800 and run.eval["episodes"] == 2 and math.isfinite(run.eval["mean_return"])
    tree, _ = load_checkpoint(list_checkpoints(run.run_dir / "checkpoints")[-1])
    prog = tree["program"]
    assert prog["learner_steps"] == prog["learner"]["steps"] > 0
    actors = [a["actor"] for a in prog["actors"]]
    assert len(actors) == 2 and all(a["version"] > 0 for a in actors)
    table = prog["replay"]["table"]
    assert table["rate_limiter"]["inserts"] > 0 and table["rate_limiter"]["samples"] > 0
