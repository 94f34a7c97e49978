"""DQN networks, actor, learner and builder: shapes, the update against a recomputation, schedules."""

import copy

import numpy as np
import pytest
import torch

from shoal.agents.dqn.builder import DQNBuilder
from shoal.agents.dqn.config import ApexDQNConfig, DQNConfig
from shoal.agents.dqn.loss import double_q_target, huber, q_learning_target
from shoal.agents.dqn.networks import QNetwork
from shoal.config import build
from shoal.core.schedules import per_actor_exponent
from shoal.core.types import EnvSpec, StepResult
from shoal.data import importance_weights
from shoal.errors import ConfigError, EnvError
from shoal.services.replay import BatchFeed

SPEC = EnvSpec("toy", (4,), np.dtype(np.float32), True, 3)
IMAGE = EnvSpec("img", (4, 84, 84), np.dtype(np.uint8), True, 6)


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"obs": rng.normal(size=(n, 4)).astype(np.float32), "action": rng.integers(0, 3, n),
            "reward": rng.normal(size=n).astype(np.float32),
            "discount": np.where(rng.random(n) < 0.3, 0.0, 0.99).astype(np.float32),
            "next_obs": rng.normal(size=(n, 4)).astype(np.float32)}


def make(total_steps=10_000, **kw):
    cfg = DQNConfig(**{"batch_size": 8, "learning_starts": 0, **kw})
    b = DQNBuilder(cfg, SPEC, total_steps=total_steps, seed=3)
    tables = b.make_tables()
    return b, tables, b.make_learner(b.make_networks(), tables)


@pytest.mark.parametrize("dueling", [False, True])
def test_q_network_shapes(dueling):
    net = QNetwork(SPEC, (16, 16), "relu", dueling, head_hidden=8 if dueling else 0)
    assert net(torch.zeros(5, 4)).shape == (5, 3)
    cnn = QNetwork(IMAGE, dueling=dueling)
    assert cnn(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, 6)


def test_dueling_head_is_v_plus_centred_a():
    net = QNetwork(SPEC, (16,), "relu", dueling=True)
    x = torch.randn(5, 4)
    h = torch.relu(net.torso.net[0](x))
    v, a = net.value(h), net.advantage(h)
    assert torch.allclose(net(x), v + a - a.mean(-1, keepdim=True), atol=1e-6)


def test_q_network_refuses_continuous_actions():
    with pytest.raises(EnvError, match="Discrete"):
        QNetwork(EnvSpec("c", (3,), np.dtype(np.float32), False, 1))


@pytest.mark.parametrize("double", [False, True])
def test_update_matches_a_recomputation(double):
    _, _, learner = make(double=double, max_grad_norm=0.0, optimizer="adam")
    with torch.no_grad():
        learner.target.q.bias.add_(0.5)  # make target and online nets differ
    items = batch()
    net0, tgt0 = copy.deepcopy(learner.net), copy.deepcopy(learner.target)
    metrics, prio = learner.update(items)
    t = {k: torch.as_tensor(v) for k, v in items.items()}
    with torch.no_grad():
        q = net0(t["obs"]).gather(1, t["action"].long()[:, None]).squeeze(1)
        if double:
            target = double_q_target(t["reward"], t["discount"], net0(t["next_obs"]), tgt0(t["next_obs"]))
        else:
            target = q_learning_target(t["reward"], t["discount"], tgt0(t["next_obs"]))
    assert metrics["loss"] == pytest.approx(float(huber(target - q).mean()), rel=1e-5)
    assert np.allclose(prio, np.abs((target - q).numpy()) + 1e-6, atol=1e-5)
    # one Adam step moved the online net and left the target alone
    assert not torch.equal(learner.net.q.weight, net0.q.weight)
    assert torch.equal(learner.target.q.weight, tgt0.q.weight)


def test_double_and_plain_targets_differ_when_nets_disagree():
    _, _, plain = make(double=False)
    _, _, dbl = make(double=True)
    with torch.no_grad():
        for learner in (plain, dbl):
            learner.target.q.bias.copy_(torch.tensor([0.0, 5.0, -5.0]))
    assert plain.update(batch())[0]["loss"] != pytest.approx(dbl.update(batch())[0]["loss"])


def test_prioritized_step_weights_the_loss_and_writes_priorities_back():
    _, _, learner = make(prioritized=True, per_beta=1.0, per_beta_final=1.0, max_grad_norm=0.0)
    feed = BatchFeed()
    learner.table = feed
    items = batch()
    probs = np.linspace(0.05, 0.2, 8)
    feed.feed([(items, np.arange(8) + 100, probs, 50)])
    net0, tgt0 = copy.deepcopy(learner.net), copy.deepcopy(learner.target)
    m = learner.step()
    t = {k: torch.as_tensor(v) for k, v in items.items()}
    with torch.no_grad():
        q = net0(t["obs"]).gather(1, t["action"].long()[:, None]).squeeze(1)
        td = q_learning_target(t["reward"], t["discount"], tgt0(t["next_obs"])) - q
    w = torch.from_numpy(importance_weights(probs, 50, 1.0))
    assert m["loss"] == pytest.approx(float((huber(td) * w).mean()), rel=1e-5)
    keys, prio = feed.take_priorities()
    assert np.array_equal(keys, np.arange(8) + 100)
    assert np.allclose(prio, td.abs().numpy() + 1e-6, atol=1e-5)


def test_prioritized_table_gets_new_priorities():
    _, tables, learner = make(prioritized=True)
    tables["replay"].insert(batch(64))
    assert tables["replay"].selector.tree.total == pytest.approx(64.0)  # new items: priority 1
    learner.step()
    assert tables["replay"].selector.tree.total != pytest.approx(64.0)  # 8 items now hold (|td| + eps)**alpha


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_target_updates_every_interval(tau):
    _, tables, learner = make(target_update_interval=3, tau=tau)
    tables["replay"].insert(batch(64))
    before = learner.target.q.weight.clone()
    learner.step()
    learner.step()
    assert torch.equal(learner.target.q.weight, before)
    learner.step()
    expected = before + tau * (learner.net.q.weight - before)
    assert torch.allclose(learner.target.q.weight, expected, atol=1e-6)


def test_uniform_rounds_draw_every_batch_from_the_table():
    _, tables, learner = make(gradient_steps=4)
    tables["replay"].insert(batch(64))
    for _ in range(6):
        learner.step()
    assert learner.steps == 6
    assert len(learner._prefetched) == 2  # second round: 4 drawn, 2 used


def test_learner_state_round_trip():
    _, tables, a = make()
    tables["replay"].insert(batch(64))
    for _ in range(5):
        a.step()
    _, _, b = make()
    b.load_state(a.state())
    assert b.steps == 5
    for k, v in a.net.state_dict().items():
        assert torch.equal(v, b.net.state_dict()[k])
    assert torch.equal(a.target.q.weight, b.target.q.weight)


def test_learner_steps_due_follows_train_freq_and_learning_starts():
    b = DQNBuilder(DQNConfig(learning_starts=1000, train_freq=64, gradient_steps=8), SPEC, 10_000)
    assert b.learner_steps_due(999, 0) == 0
    assert b.learner_steps_due(1000, 0) == 8
    assert b.learner_steps_due(1063, 8) == 0
    assert b.learner_steps_due(1064, 8) == 8
    assert b.learner_steps_due(1064 + 64 * 3, 8) == 32
    assert b.steps_per_iteration == 64
    assert DQNBuilder(DQNConfig(num_envs=4, train_freq=64), SPEC).steps_per_iteration == 16


def _step(actor, obs, rng, done_every=7):
    a = actor.select_action(obs)
    nxt = rng.normal(size=obs.shape).astype(np.float32)
    done = np.array([(actor.env_steps // len(obs)) % done_every == done_every - 1] * len(obs))
    actor.observe(a, StepResult(nxt, np.ones(len(obs), np.float32), done, np.zeros(len(obs), bool), nxt))
    return nxt


def test_actor_epsilon_uses_global_steps_and_apex_formula():
    b = DQNBuilder(DQNConfig(exploration_fraction=0.5, epsilon_start=1.0, epsilon_final=0.1), SPEC, 1000)
    actor = b.make_actor(b.make_networks(), 2, actor_id=0, num_actors=2)
    actor.observe_first(np.zeros((2, 4), np.float32))
    rng = np.random.default_rng(0)
    obs = np.zeros((2, 4), np.float32)
    for _ in range(50):
        obs = _step(actor, obs, rng)
    # 100 own env steps x 2 actors = 200 global steps of a 500-step decay
    assert actor.epsilon == pytest.approx(1.0 - 0.9 * 200 / 500)
    ab = DQNBuilder(ApexDQNConfig(), SPEC, 1000)
    eps = [ab.make_actor(ab.make_networks(), 1, i, 5).epsilon for i in range(5)]
    assert eps == pytest.approx([per_actor_exponent(0.4, i, 5, 7.0) for i in range(5)])


def test_actor_drains_nstep_items_with_td_priorities():
    b = DQNBuilder(DQNConfig(n_step=3, gamma=0.9, actor_priorities=True), SPEC, 1000)
    actor = b.make_actor(b.make_networks(), 2)
    actor.observe_first(np.zeros((2, 4), np.float32))
    rng = np.random.default_rng(1)
    obs = np.zeros((2, 4), np.float32)
    for _ in range(10):
        obs = _step(actor, obs, rng)
    items = actor.drain()
    assert len(items["reward"]) > 0 and np.isin(np.round(items["discount"], 4), np.float32([0.0, 0.729])).all()
    t = {k: torch.as_tensor(v) for k, v in items.items() if k != "priority"}
    with torch.no_grad():
        q = actor.net(t["obs"]).gather(1, t["action"].long()[:, None]).squeeze(1)
        target = q_learning_target(t["reward"], t["discount"], actor.net(t["next_obs"]))
    assert np.allclose(items["priority"], (target - q).abs().numpy() + 1e-6, atol=1e-5)
    assert actor.drain() is None


def test_actor_state_round_trip_and_version_skip():
    b = DQNBuilder(DQNConfig(), SPEC, 1000)
    actor = b.make_actor(b.make_networks(), 2, seed=5)
    actor.observe_first(np.zeros((2, 4), np.float32))
    sd = {k: torch.zeros_like(v) for k, v in actor.net.state_dict().items()}
    actor.load_variables(3, sd)
    assert actor.version == 3 and torch.count_nonzero(actor.net.q.weight) == 0
    actor.load_variables(3, {k: torch.ones_like(v) for k, v in sd.items()})  # same version: skipped
    assert torch.count_nonzero(actor.net.q.weight) == 0
    s = actor.state()
    x = actor.rng.random(3)
    actor.load_state(s)
    assert np.array_equal(actor.rng.random(3), x)


def test_evaluation_policy_is_greedy():
    b = DQNBuilder(DQNConfig(), SPEC, 1000)
    net = b.make_networks()
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    greedy = net(torch.from_numpy(obs)).argmax(-1).numpy()
    assert np.array_equal(b.make_policy(net, evaluation=True)(obs), greedy)


def test_tables_follow_the_flags():
    b = DQNBuilder(DQNConfig(prioritized=True, buffer_size=100, batch_size=10), SPEC)
    t = b.make_tables()["replay"]
    assert type(t.selector).__name__ == "Prioritized" and t.capacity == 100
    assert type(DQNBuilder(DQNConfig(), SPEC).make_tables()["replay"].selector).__name__ == "Uniform"


@pytest.mark.parametrize("bad, match", [
    ({"tau": 0.0}, "tau"), ({"batch_size": 512, "buffer_size": 100}, "buffer_size"),
    ({"n_step": 0}, "n_step"), ({"exploration_fraction": 0.0}, "exploration_fraction"),
    ({"loss": "l1"}, "loss"), ({"epsilon_final": 1.5}, "epsilon_final"), ({"lr_final": 1.0}, "lr_final"),
])
def test_config_validation(bad, match):
    with pytest.raises(ConfigError, match=match):
        build(DQNConfig, bad)


def test_apex_config_defaults_combine_every_flag():
    c = ApexDQNConfig()
    assert c.double and c.dueling and c.prioritized and c.n_step == 3 and c.actor_priorities
    assert c.exploration == "apex"
