"""The R2D2 actor, learner and builder: stored states, burn-in, resets, priorities, checkpoints, registration."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from shoal.agents import registry
from shoal.agents.r2d2.actor import R2D2Actor
from shoal.agents.r2d2.builder import R2D2Builder
from shoal.agents.r2d2.config import ApexR2D2Config, R2D2Config
from shoal.agents.r2d2.networks import RecurrentQNetwork
from shoal.config import build
from shoal.core.seeding import seeded_global_rngs
from shoal.core.types import StepResult
from shoal.envs import env_spec, make_vec_env
from shoal.errors import ConfigError, ShoalWarning

ENV = "shoal/CartPoleNoVel-v1"
SMALL = dict(num_envs=2, burn_in=4, trace_length=8, sequence_period=6, batch_size=8, buffer_size=200, n_step=3,
             encoder=(16,), lstm_hidden=16, learning_starts=0, target_update_period=3)


def _builder(algo: str = "r2d2", **kw) -> R2D2Builder:
    spec = registry.get(algo)
    return spec.builder_cls()(build(spec.config_cls(), {**SMALL, **kw}), env_spec(ENV), total_steps=2000, seed=1)


def _collect(builder: R2D2Builder, steps: int, seed: int = 0, epsilon: float = 0.3):
    """An actor of ``builder`` run for ``steps`` vector steps on the real env; returns (actor, items drained once)."""
    with seeded_global_rngs(0):
        net = builder.make_networks()
    actor = builder.make_actor(net, builder.num_envs, seed=seed)
    actor.cfg = build(type(builder.config), {**vars(builder.config), "epsilon_start": epsilon, "epsilon_final": epsilon})
    env = make_vec_env(ENV, builder.num_envs, seed=seed)
    actor.observe_first(env.obs)
    obs = env.obs
    for _ in range(steps):
        a = actor.select_action(obs)
        step = env.step(a)
        actor.observe(a, step)
        obs = step.next_obs
    env.close()
    return actor, actor.drain()


def test_sequences_carry_their_start_state_and_fixed_length():
    b = _builder()
    _, items = _collect(b, 120)
    n = len(items["obs"])
    L = b.config.sequence_length
    assert n > 10 and items["obs"].shape == (n, L, 2) and items["mask"].shape == (n, L)
    assert items["lstm_h"].shape == items["lstm_c"].shape == (n, 1, 16)  # one state per sequence, not per step
    assert (items["mask"].sum(axis=1) >= b.config.burn_in + 2).all()  # every item has a transition to learn
    assert b.items_per_env_step == pytest.approx(1 / 6)


def test_stored_state_equals_the_state_the_network_recomputes_over_the_overlap():
    """The actor's state at a sequence's start = the network run from the previous sequence's stored state."""
    b = _builder()
    actor, items = _collect(b, 150)
    net, p = actor.net, b.config.period
    pairs = 0
    zero_starts = 0
    for i in range(len(items["obs"])):
        if not items["mask"][i, p]:
            continue
        follower = [j for j in range(len(items["obs"])) if np.array_equal(items["obs"][j, 0], items["obs"][i, p])
                    and j != i]
        if not follower:
            continue
        (j,) = follower
        state = (torch.as_tensor(items["lstm_h"][i:i + 1]).transpose(0, 1).contiguous(),
                 torch.as_tensor(items["lstm_c"][i:i + 1]).transpose(0, 1).contiguous())
        with torch.no_grad():
            _, (h, c) = net(torch.as_tensor(items["obs"][i:i + 1, :p]).transpose(0, 1), state)
        np.testing.assert_allclose(h[:, 0].numpy(), items["lstm_h"][j], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c[:, 0].numpy(), items["lstm_c"][j], rtol=1e-5, atol=1e-6)
        assert np.abs(items["lstm_h"][j]).sum() > 0
        pairs += 1
    for i in range(len(items["obs"])):  # sequences opening an episode start from a zero state
        if not np.abs(items["lstm_h"][i]).any():
            zero_starts += 1
    assert pairs >= 10 and zero_starts >= 2


def test_actor_resets_the_lstm_state_of_copies_whose_episode_ends():
    b = _builder(burn_in=0, trace_length=6, sequence_period=5)
    with seeded_global_rngs(0):
        net = b.make_networks()
    actor: R2D2Actor = b.make_actor(net, 2, seed=0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(2, 2)).astype(np.float32)
    actor.observe_first(obs)
    entering, seen = [], []
    for t in range(5):
        a = actor.select_action(obs)
        entering.append(actor._entering[0].copy())
        seen.append(obs)
        nxt = rng.normal(size=(2, 2)).astype(np.float32)
        ended = t == 2
        step = StepResult(nxt, np.ones(2, np.float32), np.array([ended, False]), np.zeros(2, bool),
                          rng.normal(size=(2, 2)).astype(np.float32))
        actor.observe(a, step)
        if ended:  # copy 0 starts an episode at the next timestep: zero state there, copy 1 carries on
            assert not actor.lstm_state[0][:, 0].any() and np.abs(actor.lstm_state[0][:, 1]).sum() > 0
        obs = nxt
    # the state entering copy 0's new episode (timestep 3) is zero; inside episodes it is not
    assert not entering[3][:, 0].any() and np.abs(entering[2][:, 0]).sum() > 0 and np.abs(entering[3][:, 1]).sum() > 0
    # copy 0's state after timestep 4 is the net run over its new episode (timesteps 3, 4) from a zero state,
    # copy 1's the net run over all five timesteps
    with torch.no_grad():
        _, (h0, c0) = net(torch.as_tensor(np.stack(seen[3:])[:, :1]), net.initial_state(1))
        _, (h1, c1) = net(torch.as_tensor(np.stack(seen)[:, 1:]), net.initial_state(1))
    np.testing.assert_allclose(actor.lstm_state[0][:, :1], h0.numpy(), atol=1e-5)
    np.testing.assert_allclose(actor.lstm_state[1][:, :1], c0.numpy(), atol=1e-5)
    np.testing.assert_allclose(actor.lstm_state[0][:, 1:], h1.numpy(), atol=1e-5)
    np.testing.assert_allclose(actor.lstm_state[1][:, 1:], c1.numpy(), atol=1e-5)
    items = actor.drain()  # copy 0's ended episode (4 timesteps with its final observation), padded
    assert items is not None and len(items["obs"]) == 1
    assert items["mask"][0].tolist() == [True] * 4 + [False] * 2
    np.testing.assert_array_equal(items["lstm_h"][0], 0.0)  # it opened with a zero stored state


def _batch(builder: R2D2Builder, seed: int = 0):
    _, items = _collect(builder, 200, seed)
    idx = np.arange(builder.config.batch_size)
    return {k: v[idx] for k, v in items.items() if k != "priority"}


def test_burn_in_steps_get_no_gradient_and_only_their_observations_matter():
    b = _builder(prioritized=False)
    learner = b.make_learner(b.make_networks(), b.make_tables())
    items = _batch(b)
    bi = b.config.burn_in
    obs = torch.as_tensor(items["obs"]).clone().requires_grad_(True)
    h0 = torch.as_tensor(items["lstm_h"]).clone().requires_grad_(True)
    loss, _, _, _ = learner.loss({**items, "obs": obs, "lstm_h": h0})
    loss.backward()
    assert obs.grad is not None and not obs.grad[:, :bi].any() and obs.grad[:, bi:].abs().sum() > 0
    assert h0.grad is None or not h0.grad.any()  # the stored state enters through the burn-in only

    def loss_of(batch):
        with torch.no_grad():
            return float(learner.loss(batch)[0])

    base = loss_of(items)
    changed = {k: v.copy() for k, v in items.items()}
    rng = np.random.default_rng(1)
    changed["reward"][:, :bi] = rng.normal(size=changed["reward"][:, :bi].shape) * 10
    changed["action"][:, :bi] = 1 - changed["action"][:, :bi]
    changed["discount"][:, :bi] = 0.0
    assert loss_of(changed) == base  # burn-in rewards, actions and discounts are not in the loss
    moved = {k: v.copy() for k, v in items.items()}
    moved["obs"][:, :bi] += 0.5
    assert loss_of(moved) != base  # burn-in observations are, through the state they refresh
    restate = {k: v.copy() for k, v in items.items()}
    restate["lstm_h"] = restate["lstm_h"] + 0.5
    assert loss_of(restate) != base


def test_learner_updates_priorities_and_copies_the_target_on_schedule():
    b = _builder(target_update_period=3)
    tables = b.make_tables()
    learner = b.make_learner(b.make_networks(), tables)
    _, items = _collect(b, 200)
    tables["replay"].insert(items)
    before = tables["replay"].selector.tree.get(tables["replay"].index.live_slots()).copy()
    for i in range(1, 7):
        m = learner.step()
        assert np.isfinite(m["loss"]) and np.isfinite(m["q_mean"])
        same = all(torch.equal(p, q) for p, q in zip(learner.net.state_dict().values(),
                                                    learner.target.state_dict().values()))
        assert same == (i % 3 == 0)
    after = tables["replay"].selector.tree.get(tables["replay"].index.live_slots())
    assert not np.allclose(before, after)


def test_actor_priorities_are_the_learners_priorities_with_its_network_as_target():
    b = _builder("apex_r2d2")
    actor, items = _collect(b, 200)
    assert "priority" in items and (items["priority"] > 0).all()
    learner = b.make_learner(b.make_networks(), {})
    learner.net.load_state_dict(actor.net.state_dict())
    learner.target.load_state_dict(actor.net.state_dict())
    with torch.no_grad():
        _, td, valid, _ = learner.loss({k: v for k, v in items.items() if k != "priority"})
    from shoal.agents.r2d2.loss import sequence_priorities

    want = sequence_priorities(td, valid, b.config.per_eta, b.config.per_eps).numpy()
    np.testing.assert_allclose(items["priority"], want, rtol=1e-5, atol=1e-6)


def test_learner_state_round_trips_through_a_checkpoint(tmp_path):
    from shoal.io.checkpoint import load_checkpoint, save_checkpoint

    b = _builder(target_update_period=2)
    tables = b.make_tables()
    learner = b.make_learner(b.make_networks(), tables)
    _, items = _collect(b, 200)
    tables["replay"].insert(items)
    for _ in range(3):
        learner.step()
    path = save_checkpoint(tmp_path / "ckpt-00000003", {"learner": learner.state()})
    assert not list(tmp_path.glob("*.pkl")) and list(tmp_path.glob("*.safetensors"))
    tree, _ = load_checkpoint(path)
    fresh = b.make_learner(b.make_networks(), {})
    fresh.load_state(tree["learner"])
    batch = _batch(b, seed=5)
    m1, p1 = learner.update(batch)
    m2, p2 = fresh.update(batch)
    assert m1 == m2 and np.array_equal(p1, p2) and fresh.steps == learner.steps == 4
    for x, y in zip(learner.net.state_dict().values(), fresh.net.state_dict().values()):
        assert torch.equal(x, y)


def test_builder_hooks_and_registration():
    local, apex = _builder(), _builder("apex_r2d2")
    assert registry.get("r2d2").topology == "local" and registry.get("apex_r2d2").topology == "apex"
    assert local.replay_batch_size == 8 and local.checkpoint_replay is True
    spi, min_size = local.replay_rate
    # 8 sequences per learner step, 1 step per 16 env steps, one sequence per 6 env steps
    assert spi == pytest.approx(8 * 1 * 6 / 16) and min_size == 8
    assert not local.config.actor_priorities and apex.config.actor_priorities
    assert apex.config.exploration == "apex"
    actors = [apex.make_actor(apex.make_networks(), 2, i, 4) for i in range(4)]
    # one epsilon per env copy: copy j of actor i is index 2 i + j of the 8 copies in the Ape-X spread
    assert np.concatenate([a.epsilon for a in actors]) == pytest.approx([0.4 ** (1 + 7 * k / 7) for k in range(8)])
    assert local.make_actor(local.make_networks(), 2).epsilon == pytest.approx([1.0, 1.0])  # linear: one for all
    assert isinstance(local.make_networks(), RecurrentQNetwork)
    assert local.steps_per_iteration == 16 // 2


def test_config_rejects_bad_settings():
    with pytest.raises(ConfigError, match="sequence_period"):
        R2D2Config(burn_in=4, trace_length=8, sequence_period=20)
    with pytest.raises(ConfigError, match="trace_length"):
        ApexR2D2Config(trace_length=1)
    # a period of trace_length would skip the transition between two sequences' trained parts
    with pytest.raises(ConfigError, match=r"sequence_period must be in \[0, trace_length - 1 = 7\]"):
        R2D2Config(burn_in=4, trace_length=8, sequence_period=8, n_step=3)
    assert R2D2Config(burn_in=4, trace_length=8, sequence_period=7, n_step=3).period == 7
    with pytest.raises(ConfigError, match="n_step"):
        R2D2Config(trace_length=8, n_step=8)
    assert R2D2Config(trace_length=8, n_step=7).n_step == 7
    for msg in ("sequence_period", "n_step"):  # one sentence each
        with pytest.raises(ConfigError) as err:
            R2D2Config(trace_length=8, **({"sequence_period": 9} if msg == "sequence_period" else {"n_step": 9}))
        assert "\n" not in str(err.value)


def test_default_period_is_half_the_trained_part():
    """The paper's 80 trained timesteps (after 40 of burn-in) start every 40: period = trace_length // 2."""
    assert R2D2Config(burn_in=40, trace_length=80).period == 40
    assert R2D2Config(burn_in=20, trace_length=40).period == 20
    assert R2D2Config(burn_in=0, trace_length=3, n_step=2).period == 1
    assert R2D2Config(burn_in=5, trace_length=30, sequence_period=17).period == 17


def test_recurrent_policy_carries_its_state_between_calls():
    b = _builder()
    with seeded_global_rngs(13):
        net = b.make_networks()
    policy = b.make_policy(net, evaluation=True)
    obs = np.random.default_rng(13).normal(size=(3, 3, 2)).astype(np.float32)[0] * 2
    with torch.no_grad():
        q, (h, c) = net(torch.as_tensor(np.stack([obs] * 3)), net.initial_state(3))
    greedy = q.argmax(-1).numpy()
    assert (greedy[0] != greedy[2]).any()  # the same observation, other actions later: only a state explains it
    seq = [policy(obs) for _ in range(3)]
    assert all(a.shape == (3,) for a in seq)
    np.testing.assert_array_equal(np.stack(seq), greedy)  # every call saw the calls before it
    assert policy.state is not None
    np.testing.assert_allclose(policy.state[0], h.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(policy.state[1], c.numpy(), rtol=1e-5, atol=1e-6)
    fresh = b.make_policy(net, evaluation=True)  # a new policy starts every copy from a zero state
    assert np.array_equal(fresh(obs), greedy[0])


@pytest.mark.parametrize("dueling, encoder, layers, activation",
                         [(True, (16,), 1, "relu"), (False, (), 1, "relu"), (True, (8, 8), 2, "relu"),
                          (True, (16, 8), 1, "tanh"), (False, (8,), 2, "tanh")])
def test_numpy_inference_matches_the_torch_network(dueling, encoder, layers, activation):
    from shoal.agents.r2d2.inference import NumpyRecurrentQ, TorchRecurrentQ

    with seeded_global_rngs(3):
        net = RecurrentQNetwork(env_spec(ENV), encoder, 16, activation, dueling)
    if layers > 1:
        from shoal.nets.recurrent import LSTMTorso

        net.torso = LSTMTorso(2, 16, encoder, activation, num_layers=layers)
    assert NumpyRecurrentQ.supports(net)
    fast, slow = NumpyRecurrentQ(net), TorchRecurrentQ(net)
    rng = np.random.default_rng(0)
    state_f = state_s = (np.zeros((layers, 3, 16), np.float32), np.zeros((layers, 3, 16), np.float32))
    for _ in range(6):
        obs = rng.normal(size=(3, 2)).astype(np.float32)
        (qf, state_f), (qs, state_s) = fast(obs, state_f), slow(obs, state_s)
        np.testing.assert_allclose(qf, qs, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(state_f[0], state_s[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(state_f[1], state_s[1], rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # in-place parameter updates are seen through the views
        for p in net.parameters():
            p.mul_(0.5)
    assert fast.current()
    np.testing.assert_allclose(fast(obs, state_f)[0], slow(obs, state_s)[0], rtol=1e-4, atol=1e-5)


def _weighted_learner_pair(b: R2D2Builder):
    learner = b.make_learner(b.make_networks(), b.make_tables())
    twin = b.make_learner(b.make_networks(), {})
    twin.load_state(learner.state())
    return learner, twin


def test_importance_weights_scale_each_sequences_loss_with_the_annealed_beta():
    b = _builder(per_beta=0.4, per_beta_final=1.0)  # total_steps 2000, learning_starts 0, train_freq 16
    horizon = (2000 // 16 + 1) * 1
    batch = _batch(b)
    n = b.config.batch_size
    probs = np.linspace(0.5, 4.0, n) / 100.0  # non-uniform sampling probabilities of a 100-item table
    for step, beta in ((0, 0.4), (horizon, 1.0)):
        learner, twin = _weighted_learner_pair(b)
        learner.steps = twin.steps = step
        assert learner.beta(step) == pytest.approx(beta)
        with torch.no_grad():
            _, td, valid, _ = learner.loss(batch)
        per_seq = (0.5 * td ** 2).sum(dim=0).numpy().astype(np.float64)  # sum of each sequence's step losses
        count = float(valid.sum())
        w = (100 * probs) ** -beta
        w = w / w.max()
        weighted, _ = learner.update(batch, probs, 100)
        plain, _ = twin.update(batch, None, 100)
        assert plain["loss"] == pytest.approx(per_seq.sum() / count, rel=1e-5)
        assert weighted["loss"] == pytest.approx((w * per_seq).sum() / count, rel=1e-5)
        assert weighted["loss"] < plain["loss"] * 0.99  # the weights (all <= 1, not all 1) took effect
    assert learner.beta(horizon // 2) == pytest.approx(0.7)


def test_q_mean_is_reported_in_the_returns_units():
    from shoal.agents.r2d2.loss import inverse_value_rescale

    for rescaling in (True, False):
        b = _builder(value_rescaling=rescaling, prioritized=False)
        learner = b.make_learner(b.make_networks(), b.make_tables())
        batch = _batch(b)
        with torch.no_grad():
            _, _, valid, q = learner.loss(batch)
        raw = float((q * valid).sum() / valid.sum())
        unscaled = float((inverse_value_rescale(q, b.config.rescale_eps) * valid).sum() / valid.sum())
        metrics, _ = learner.update(batch)
        assert metrics["q_mean"] == pytest.approx(unscaled if rescaling else raw, rel=1e-5)
        assert abs(unscaled - raw) > 1e-3 * max(1.0, abs(raw))  # the two differ: the check is not vacuous


def test_stored_state_copies_read_only_arrays_without_warning():
    import warnings

    from shoal.agents.r2d2.networks import stored_state

    h = np.arange(2 * 1 * 3, dtype=np.float32).reshape(2, 1, 3)
    c = -h
    for a in (h, c):
        a.flags.writeable = False  # as batches arriving from another process are
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it is handed a read-only array
        sh, sc = stored_state({"lstm_h": h, "lstm_c": c})
    assert sh.shape == sc.shape == (1, 2, 3)
    np.testing.assert_array_equal(sh.numpy(), h.transpose(1, 0, 2))
    np.testing.assert_array_equal(sc.numpy(), c.transpose(1, 0, 2))


def test_a_batch_with_nothing_after_the_burn_in_warns_once_and_reports_its_trained_fraction():
    b = _builder(prioritized=False)
    learner = b.make_learner(b.make_networks(), b.make_tables())
    items = _batch(b)
    m, _ = learner.update(items)
    assert 0.0 < m["trained_fraction"] <= 1.0
    ended = {k: v.copy() for k, v in items.items()}
    ended["mask"][:, b.config.burn_in:] = False  # every episode ended inside the burn-in
    with pytest.warns(ShoalWarning, match=r"no timestep to train on after the burn-in of 4.*lower burn_in"):
        m, _ = learner.update(ended)
    assert m["trained_fraction"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner.update(ended)  # once per learner, not every step
