"""Recurrent PPO/A2C: the actor carries and resets its LSTM state, the learner recomputes what it acted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shoal.agents import registry
from shoal.agents.pg.builder import ActorCriticBuilder
from shoal.agents.pg.config import A2CConfig, ImpalaConfig, PPOConfig
from shoal.agents.pg.loss import adapt_kl_beta
from shoal.agents.pg.recurrent import RecurrentActorCritic, RecurrentPolicy, RecurrentRolloutActor, select_columns
from shoal.agents.pg.recurrent_learner import RecurrentActorCriticLearner, from_sequences, to_sequences
from shoal.core.types import EnvSpec, Rollout, StepResult
from shoal.envs.make import env_spec, make_vec_env
from shoal.errors import ConfigError
from shoal.io.checkpoint import load_checkpoint, save_checkpoint

ENV = "shoal/CartPoleNoVel-v1"


def _builder(seed: int = 0, env: str = ENV, **kw) -> ActorCriticBuilder:
    cfg = PPOConfig(recurrent=True, lstm_hidden=8, hidden=(16,), num_envs=4, rollout_length=kw.pop("T", 32),
                    minibatch_size=kw.pop("minibatch_size", 0), **kw)
    return ActorCriticBuilder(cfg, env_spec(env), total_steps=10_000, seed=seed)


def _net(b: ActorCriticBuilder) -> RecurrentActorCritic:
    torch.manual_seed(0)
    net = b.make_networks()
    assert isinstance(net, RecurrentActorCritic)
    return net


def _collect(actor: RecurrentRolloutActor, env, T: int) -> Rollout:
    for _ in range(T):
        action = actor.select_action(env.obs)
        actor.observe(action, env.step(action))
    return actor.drain()


def _reference(net: RecurrentActorCritic, rollout: Rollout, state) -> tuple[np.ndarray, np.ndarray]:
    """Params and values of a rollout stepped one step at a time, each episode start zeroing the state by hand."""
    T, B = rollout.rewards.shape
    params, values = [], []
    with torch.no_grad():
        for t in range(T):
            keep = torch.as_tensor(~rollout.extras["starts"][t]).float().view(1, B, 1)
            state = tuple(s * keep for s in state)
            p, v, state = net.step(torch.as_tensor(rollout.obs[t]), state, torch.zeros(B, dtype=torch.bool))
            params.append(p.numpy())
            values.append(v.numpy())
    return np.stack(params), np.stack(values)


def test_actor_resets_the_state_at_episode_starts_and_carries_it_elsewhere():
    b = _builder()
    net = _net(b)
    actor = b.make_actor(net, 4, seed=1)
    env = make_vec_env(ENV, 4, seed=3)
    actor.observe_first(env.obs)
    first = _collect(actor, env, 32)
    second = _collect(actor, env, 32)  # the carried state continues across the rollout boundary
    starts = second.extras["starts"]
    assert first.extras["starts"][0].all() and starts[1:].any(), "episodes must end inside the rollout"
    p_ref, v_ref = _reference(net, first, net.initial_state(4))
    np.testing.assert_allclose(first.extras["policy_params"], p_ref, atol=1e-6)
    np.testing.assert_allclose(first.values, v_ref, atol=1e-6)
    with torch.no_grad():
        _, _, end_state = net(torch.as_tensor(first.obs), net.initial_state(4), torch.as_tensor(first.extras["starts"]))
    p2, _ = _reference(net, second, end_state)
    np.testing.assert_allclose(second.extras["policy_params"], p2, atol=1e-6)
    # At a start the params are those of a fresh zero state; without the reset they would differ.
    t, col = map(int, np.argwhere(starts[1:])[0] + [1, 0])
    with torch.no_grad():
        fresh, _, _ = net.step(torch.as_tensor(second.obs[t, col:col + 1]), net.initial_state(1), torch.zeros(1, dtype=torch.bool))
        _, _, before = net(torch.as_tensor(second.obs[:t]), end_state, torch.as_tensor(starts[:t]))
        carried, _, _ = net.step(torch.as_tensor(second.obs[t, col:col + 1]), select_columns(before, [col]),
                                 torch.zeros(1, dtype=torch.bool))
    np.testing.assert_allclose(second.extras["policy_params"][t, col], fresh[0].numpy(), atol=1e-6)
    assert not np.allclose(carried[0].numpy(), fresh[0].numpy(), atol=1e-4)


def test_stored_start_states_equal_the_actors_carried_state():
    b = _builder(sequence_length=8, minibatch_size=16)
    net = _net(b)
    actor = b.make_actor(net, 4, seed=2)
    env = make_vec_env(ENV, 4, seed=5)
    actor.observe_first(env.obs)
    end_of_previous = net.initial_state(4)
    for rollout_index in range(2):
        rollout = _collect(actor, env, 32)
        stored = rollout.extras["lstm_state"]
        assert stored.shape == (4, 4, net.state_size)
        obs, starts = torch.as_tensor(rollout.obs), torch.as_tensor(rollout.extras["starts"])
        assert starts[1:].any(), "episodes must start inside the rollout"
        with torch.no_grad():  # each stored state rebuilt by running the network from the rollout's first one
            for k in range(1, 4):
                _, _, s = net(obs[:8 * k], net.unpack_state(torch.as_tensor(stored[0])), starts[:8 * k])
                np.testing.assert_allclose(stored[k], net.pack_state(s).numpy(), atol=1e-6)
            # the first one is where the previous rollout's steps left the state (zero before the first rollout)
            np.testing.assert_allclose(stored[0], net.pack_state(end_of_previous).numpy(), atol=1e-6)
            _, _, end_of_previous = net(obs, net.unpack_state(torch.as_tensor(stored[0])), starts)
        if rollout_index == 1:  # the second rollout starts from the state the first one ended with, not zero
            assert np.abs(stored[0]).sum() > 0
    # pack/unpack are inverse
    state = tuple(torch.randn(1, 4, 8) for _ in range(4))
    for a, c in zip(net.unpack_state(net.pack_state(state)), state):
        torch.testing.assert_close(a, c)


def test_a_truncated_episode_is_valued_from_its_own_state_and_the_bootstrap_from_the_carried_one():
    spec = EnvSpec("fake", (2,), np.dtype(np.float32), True, 2)
    cfg = PPOConfig(recurrent=True, lstm_hidden=6, hidden=(8,), rollout_length=6, minibatch_size=0)
    b = ActorCriticBuilder(cfg, spec, total_steps=100)
    torch.manual_seed(0)
    net = b.make_networks()
    assert isinstance(net, RecurrentActorCritic)
    actor = b.make_actor(net, 2, seed=0)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((7, 2, 2)).astype(np.float32)
    final = rng.standard_normal((2, 2)).astype(np.float32)
    actor.observe_first(obs[0])
    trunc = np.zeros((6, 2), bool)
    trunc[2, 1] = True  # copy 1 truncated after step 2: final_obs continues that episode
    term = np.zeros((6, 2), bool)
    term[4, 0] = True
    for t in range(6):
        a = actor.select_action(obs[t])
        actor.observe(a, StepResult(obs[t + 1], np.ones(2, np.float32), term[t], trunc[t], final))
    r = actor.drain()
    starts = r.extras["starts"]
    assert starts[3, 1] and starts[5, 0] and starts.sum() == 4  # t = 0 (both) plus the two new episodes
    with torch.no_grad():
        _, _, s = net(torch.as_tensor(obs[:3]), net.initial_state(2), torch.as_tensor(starts[:3]))
        _, v_final, _ = net.step(torch.as_tensor(final), s, torch.zeros(2, dtype=torch.bool))
        _, _, s_end = net(torch.as_tensor(obs[:6]), net.initial_state(2), torch.as_tensor(starts))
        _, v_boot, _ = net.step(torch.as_tensor(obs[6]), s_end, torch.zeros(2, dtype=torch.bool))
    assert r.final_values[2, 1] == pytest.approx(float(v_final[1]), abs=1e-6)
    assert r.final_values[2, 0] == 0 and np.count_nonzero(r.final_values) == 1
    np.testing.assert_allclose(r.bootstrap_value, v_boot.numpy(), atol=1e-6)


@pytest.mark.parametrize("env", [ENV, "Pendulum-v1"])
def test_learner_recomputes_the_actors_log_probs_and_values_with_normalised_obs_across_an_update(env):
    """The shipped normalize_obs=true: after an update moved the weights and observation statistics and the
    actor adopted them, the learner recomputes the next rollout's log-probs and values (discrete and Gaussian)."""
    b = _builder(env=env, sequence_length=8, minibatch_size=16, epochs=2, normalize_obs=True)
    actor_net = _net(b)
    actor = b.make_actor(actor_net, 4, seed=1)
    vec = make_vec_env(env, 4, seed=3)
    actor.observe_first(vec.obs)
    learner = b.make_learner(_net(b), {})
    assert isinstance(learner, RecurrentActorCriticLearner)
    learner.step(_collect(actor, vec, 32))
    state = {k: v.clone() for k, v in learner.net.state_dict().items()}
    assert float(state["obs_norm.count"]) > 100 and not torch.equal(state["obs_norm.mean"], torch.zeros_like(state["obs_norm.mean"]))
    actor.load_variables(1, state)
    rollout = _collect(actor, vec, 32)  # acted with the updated weights and statistics, from a carried state
    if env == ENV:
        assert rollout.extras["starts"][1:].any()
    logp, values, _ = learner.evaluate(rollout)
    np.testing.assert_allclose(logp.numpy(), rollout.log_probs, atol=1e-5)
    np.testing.assert_allclose(values.numpy(), rollout.values, atol=1e-5)


@pytest.mark.parametrize("sequence_length", [0, 8])
def test_learner_recomputes_the_actors_log_probs_and_values(sequence_length):
    """Over a rollout crossing episode boundaries, from the stored start states, to 1e-5 (epoch 0's forward)."""
    b = _builder(sequence_length=sequence_length, minibatch_size=8 * 4 if sequence_length else 0)
    net = _net(b)
    actor = b.make_actor(net, 4, seed=1)
    env = make_vec_env(ENV, 4, seed=3)
    actor.observe_first(env.obs)
    _collect(actor, env, 32)
    rollout = _collect(actor, env, 32)  # nonzero start states
    assert rollout.extras["starts"][1:].any()
    learner = b.make_learner(_net(b), {})
    assert isinstance(learner, RecurrentActorCriticLearner)
    learner.net.load_state_dict(net.state_dict())
    logp, values, _ = learner.evaluate(rollout)
    np.testing.assert_allclose(logp.numpy(), rollout.log_probs, atol=1e-5)
    np.testing.assert_allclose(values.numpy(), rollout.values, atol=1e-5)


def test_minibatches_are_whole_sequences_with_their_stored_start_states():
    b = _builder(sequence_length=8, minibatch_size=16, epochs=2)
    net = _net(b)
    actor = b.make_actor(net, 4, seed=1)
    env = make_vec_env(ENV, 4, seed=3)
    actor.observe_first(env.obs)
    _collect(actor, env, 32)
    rollout = _collect(actor, env, 32)
    learner = b.make_learner(_net(b), {})
    assert isinstance(learner, RecurrentActorCriticLearner)
    calls = []
    inner = learner._forward
    learner._forward = lambda m, start: (calls.append((m["obs"].clone(), m["starts"].clone(), start.clone())), inner(m, start))[1]
    learner.step(rollout)
    mb = [c for c in calls if c[0].shape[1] == 2]  # minibatch_size 16 / sequence_length 8: 2 sequences
    assert len(mb) == 2 * 8  # 2 epochs of 16 sequences in minibatches of 2
    seen = set()
    for obs, starts, start in mb[:8]:
        assert obs.shape[0] == 8
        for j in range(2):
            hits = [(k, c) for k in range(4) for c in range(4) if torch.equal(obs[:, j], torch.as_tensor(rollout.obs[8 * k:8 * k + 8, c]))]
            assert len(hits) == 1
            k, c = hits[0]
            seen.add((k, c))
            np.testing.assert_array_equal(start[j].numpy(), rollout.extras["lstm_state"][k, c])
            np.testing.assert_array_equal(starts[:, j].numpy(), rollout.extras["starts"][8 * k:8 * k + 8, c])
    assert len(seen) == 16  # one epoch covers every sequence once
    x = torch.arange(32 * 4).reshape(32, 4)
    assert torch.equal(from_sequences(to_sequences(x, 8), 32), x)
    assert torch.equal(to_sequences(x, 8)[:, 4 * 2 + 3], x[16:24, 3])


def test_checkpoint_round_trip_continues_identically(tmp_path):
    b = _builder(sequence_length=8, minibatch_size=16, epochs=2)
    actor = b.make_actor(_net(b), 4, seed=1)
    env = make_vec_env(ENV, 4, seed=3)
    actor.observe_first(env.obs)
    rollouts = [_collect(actor, env, 32) for _ in range(2)]
    learner = b.make_learner(_net(b), {})
    learner.step(rollouts[0])
    path = save_checkpoint(tmp_path / "ckpt-000000000001", {"learner": learner.state(), "actor": actor.state()})
    tree, _ = load_checkpoint(path)
    other = b.make_learner(_net(b), {})
    other.load_state(tree["learner"])
    actor2 = b.make_actor(_net(b), 4, seed=99)
    actor2.load_state(tree["actor"])
    assert torch.equal(actor2.gen.get_state(), actor.gen.get_state())
    m1, m2 = learner.step(rollouts[1]), other.step(rollouts[1])
    assert m1 == m2
    for k, v in learner.net.state_dict().items():
        assert torch.equal(v, other.net.state_dict()[k]), k


def test_policy_carries_state_between_calls_and_restarts_per_batch():
    b = _builder()
    net = _net(b)
    obs = np.random.default_rng(0).standard_normal((5, 3, 2)).astype(np.float32)
    pol = RecurrentPolicy(net, deterministic=True)
    acts = [pol(o) for o in obs]
    with torch.no_grad():
        params, _, _ = net(torch.as_tensor(obs), net.initial_state(3), torch.zeros(5, 3, dtype=torch.bool))
    np.testing.assert_array_equal(np.stack(acts), net.dist.mode(params).numpy())
    assert isinstance(b.make_policy(net, evaluation=True), RecurrentPolicy)


def test_policy_restarts_from_a_zero_state_when_the_batch_size_changes():
    """Gaussian actions (Pendulum), so an action shows any difference of state exactly."""
    b = _builder(env="Pendulum-v1")
    net = _net(b)
    rng = np.random.default_rng(0)
    obs3 = rng.standard_normal((3, 3, 3)).astype(np.float32)
    obs2 = rng.standard_normal((2, 3)).astype(np.float32)

    def fresh(obs: np.ndarray) -> np.ndarray:
        return RecurrentPolicy(net, deterministic=True)(obs)

    pol = RecurrentPolicy(net, deterministic=True)
    persistent = [pol(o) for o in obs3]
    np.testing.assert_array_equal(persistent[0], fresh(obs3[0]))
    assert not np.allclose(persistent[2], fresh(obs3[2]), atol=1e-5)  # the third action follows the carried state
    np.testing.assert_array_equal(pol(obs2), fresh(obs2))  # batch 3 -> 2: a new batch of episodes from zero


def test_recurrent_settings_are_checked():
    with pytest.raises(ConfigError, match="no recurrent variant"):
        ImpalaConfig(recurrent=True)
    with pytest.raises(ConfigError, match="must divide"):
        PPOConfig(recurrent=True, rollout_length=32, sequence_length=12)
    with pytest.raises(ConfigError, match="multiple of the sequence length"):
        PPOConfig(recurrent=True, rollout_length=32, sequence_length=8, minibatch_size=12)
    a2c = A2CConfig(recurrent=True)
    builder = ActorCriticBuilder(a2c, env_spec(ENV))
    assert not builder.gradients_as_values and not builder.rollout_actor_critic
    assert registry.get("ppo").defaults(ENV)["recurrent"] is True


@pytest.mark.parametrize("overrides", [{"loss": "kl_penalty"}, {"advantages": "vtrace"}])
def test_kl_penalty_and_vtrace_variants_update_the_network(overrides):
    b = _builder(sequence_length=8, minibatch_size=16, epochs=2, **overrides)
    actor = b.make_actor(_net(b), 4, seed=1)
    env = make_vec_env(ENV, 4, seed=3)
    actor.observe_first(env.obs)
    rollout = _collect(actor, env, 32)
    learner = b.make_learner(_net(b), {})
    before = {k: v.clone() for k, v in learner.net.state_dict().items()}
    m = learner.step(rollout)
    assert all(np.isfinite(list(m.values())))
    assert not torch.equal(before["pi_lstm.lstm.weight_ih_l0"], learner.net.state_dict()["pi_lstm.lstm.weight_ih_l0"])
    if overrides.get("loss") == "kl_penalty":  # adapted once, from the KL after the update
        with torch.no_grad():
            new_params = learner.evaluate(rollout)[2].reshape(32 * 4, -1)
            old_params = torch.as_tensor(rollout.extras["policy_params"]).reshape(32 * 4, -1)
            kl = float(learner.net.dist.kl(old_params, new_params).mean())
        assert kl > 0
        assert m["kl_beta"] == adapt_kl_beta(1.0, kl, b.config.kl_target)


def test_entropy_without_an_entropy_bonus_is_measured_before_the_observation_statistics_move():
    """ent_coef=0 logs the updated policy's entropy on the rollout as the update saw it (old statistics)."""
    b = _builder(sequence_length=8, minibatch_size=16, epochs=2, ent_coef=0.0, normalize_obs=True)
    net = _net(b)
    with torch.no_grad():  # logits far from uniform, so the entropy depends on how observations are normalised
        for w in (*net.pi.parameters(), *net.pi_lstm.parameters()):
            w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(w.numel())) * 3.0)
    actor = b.make_actor(net, 4, seed=1)
    env = make_vec_env(ENV, 4, seed=3)
    actor.observe_first(env.obs)
    rollout = _collect(actor, env, 32)
    learner = b.make_learner(_net(b), {})
    learner.net.load_state_dict(net.state_dict())
    stats_before = {k: v.clone() for k, v in learner.net.obs_norm.state_dict().items()}
    m = learner.step(rollout)

    def entropy() -> float:
        with torch.no_grad():
            return float(learner.net.dist.entropy(learner.evaluate(rollout)[2].reshape(32 * 4, -1)).mean())

    after_update = entropy()
    learner.net.obs_norm.load_state_dict(stats_before)
    assert m["entropy"] == pytest.approx(entropy(), abs=1e-6)
    assert m["entropy"] != pytest.approx(after_update, abs=1e-4)  # the statistics' move does change it
