"""pref_sac and pref_ppo: the RL learner sees the reward model's rewards, never the env's.

Real actor and learner nodes on Pendulum; the wrapped learner's inputs are captured and compared
with the reward model's output and with the env's rewards of the same transitions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shoal.agents.preference.relabel import PreferenceLearner, PreferenceTable
from shoal.envs.make import env_spec
from shoal.errors import ConfigError
from shoal.io.checkpoint import load_checkpoint, save_checkpoint
from shoal.topologies.nodes import ActorNode, LearnerNode, NodeContext

ENV = "shoal/Pendulum-v1"
SMALL = {"max_labels": 40, "initial_labels": 20, "label_every": 100, "label_decay_steps": 200, "segment_length": 5,
         "segment_memory": 2000, "reward_updates": 5, "heldout_segments": 16, "reward_hidden": [16]}


def _nodes(algo: str, agent: dict[str, Any]) -> tuple[ActorNode, LearnerNode]:
    ctx = NodeContext(algo, {**SMALL, **agent}, ENV, env_spec(ENV), 1000, seed=3)
    return ActorNode(ctx, 0, 1, 11, 12), LearnerNode(ctx)


def _true_rewards_seen(actor: ActorNode) -> list[np.ndarray]:
    """Capture the env rewards the actor's adder receives (what the env returned)."""
    seen: list[np.ndarray] = []
    observe = actor.actor.observe

    def spy(action: np.ndarray, step: Any) -> None:
        seen.append(np.array(step.reward, np.float64))
        observe(action, step)

    actor.actor.observe = spy  # type: ignore[method-assign]
    return seen


def test_pref_sac_learner_batches_hold_the_models_rewards_and_the_replay_no_reward():
    actor, learner = _nodes("pref_sac", {"learning_starts": 50, "batch_size": 32, "hidden": [16, 16]})
    assert isinstance(learner.learner, PreferenceLearner)
    table = learner.tables["replay"]
    assert isinstance(table, PreferenceTable)
    true_seen = _true_rewards_seen(actor)
    batches: list[dict[str, Any]] = []
    inner = learner.learner.inner
    update = inner._update

    def spy(batch: dict[str, Any], weights: Any) -> Any:
        batches.append({k: v.clone() for k, v in batch.items()})
        return update(batch, weights)

    inner._update = spy
    steps = 0
    variables = learner.get_variables()
    while steps < 150:
        report, items = actor.run(1, variables)
        steps += report.env_steps
        learner.learn(steps, items)
    model = table.model
    assert len(batches) == 100  # one gradient step per env step after learning_starts=50
    assert model.asked >= SMALL["initial_labels"] and model.trained
    stored = table.inner.sample(64)[0]
    assert "reward" not in stored  # the replay keeps no reward at all
    true = np.concatenate(true_seen)
    assert model.buffer.added == 150 and np.array_equal(model.buffer.true_reward[:150], true)  # kept for the oracle
    last = batches[-1]  # the model has not changed since this batch was drawn (no query due since step 100)
    expected = model.reward(last["obs"].numpy(), last["action"].numpy())
    np.testing.assert_array_equal(last["reward"].numpy(), expected)
    true32 = true.astype(np.float32)  # the replay's float32: an env reward that leaked through it reads so
    assert np.isin(true32, true32).all()  # (the comparison below is one that can match)
    for b in batches:  # no batch reward is any env reward
        assert not np.isin(b["reward"].numpy(), true32).any()
    assert {"labels", "reward_model_loss", "reward_model_accuracy", "reward_corr"} <= set(learner.learn(151))


def test_the_rl_learner_waits_for_the_reward_models_first_labels():
    """learning_starts=10 but segments of 30 steps: queries at steps 10..29 find no whole segment, so the first
    SAC update must wait for step 30, when the first labels arrive and the model is trained."""
    actor, learner = _nodes("pref_sac", {"learning_starts": 10, "batch_size": 8, "hidden": [16, 16],
                                         "segment_length": 30})
    model, inner = learner.learner.model, learner.learner.inner
    trained_at_update: list[tuple[int, bool]] = []
    update = inner._update

    def spy(batch: dict[str, Any], weights: Any) -> Any:
        trained_at_update.append((model.env_steps, model.trained))
        return update(batch, weights)

    inner._update = spy
    steps = 0
    while steps < 40:
        report, items = actor.run(1, learner.get_variables())
        steps += report.env_steps
        learner.learn(steps, items)
    assert model.asked == model.schedule.target(30) and model.last_query == 30  # the first query that found segments
    assert trained_at_update and trained_at_update[0][0] == 30  # the first update is the step the labels came
    assert all(trained for _, trained in trained_at_update)


def test_pref_ppo_waits_for_the_reward_models_first_labels():
    """Rollouts of 4 steps, segments of 10: the first two rollouts hold no whole segment, so PPO's first update
    is on the third, the one the first labels came with (chains continue across rollouts)."""
    actor, learner = _nodes("pref_ppo", {"num_envs": 2, "rollout_length": 4, "minibatch_size": 4, "epochs": 1,
                                          "hidden": [16], "segment_length": 10})
    model, inner = learner.learner.model, learner.learner.inner
    updated_at: list[tuple[int, bool]] = []
    step = inner.step

    def spy(data: Any = None) -> Any:
        updated_at.append((model.env_steps, model.trained))
        return step(data)

    inner.step = spy
    steps = 0
    for _ in range(4):
        report, rollout = actor.run(4, learner.get_variables())
        steps += report.env_steps
        learner.learn(steps, rollout)
    assert updated_at == [(24, True), (32, True)] and model.last_query == 24


def test_episodes_shorter_than_a_segment_are_an_error_not_a_silent_run():
    # Pendulum's episodes are 200 steps: no 250-step segment ever exists.
    actor, learner = _nodes("pref_sac", {"learning_starts": 10, "batch_size": 8, "hidden": [16, 16],
                                         "segment_length": 250, "segment_memory": 500})
    report, items = actor.run(499, learner.get_variables())
    learner.learn(report.env_steps, items)  # the segment memory is not full yet: asked again later
    assert not learner.learner.model.trained
    report, items = actor.run(1, learner.get_variables())
    with pytest.raises(ConfigError, match="lower segment_length"):
        learner.learn(500, items)


def test_pref_ppo_learner_rollouts_hold_the_models_rewards():
    actor, learner = _nodes("pref_ppo", {"num_envs": 2, "rollout_length": 64, "minibatch_size": 32, "epochs": 1,
                                          "hidden": [16]})
    assert actor.reward_norm is None  # the env reward is not rescaled on the actor side
    true_seen = _true_rewards_seen(actor)
    rollouts: list[Any] = []
    inner = learner.learner.inner
    step = inner.step

    def spy(data: Any = None) -> Any:
        rollouts.extend(data if isinstance(data, list) else [data])
        return step(data)

    inner.step = spy
    report, rollout = actor.run(64, learner.get_variables())
    metrics = learner.learn(report.env_steps, rollout)
    model = learner.learner.model
    assert model.asked == model.schedule.target(128) > SMALL["initial_labels"] and "reward_corr" in metrics
    seen = rollouts[0]
    true = np.stack(true_seen)  # [T, B]
    assert np.array_equal(np.asarray(rollout.rewards), true)  # what the actor handed over: the env's rewards
    T, B = true.shape
    expected = model.reward(np.asarray(seen.obs).reshape(T * B, -1), np.asarray(seen.actions).reshape(T * B, -1))
    np.testing.assert_array_equal(np.asarray(seen.rewards), expected.reshape(T, B))
    assert not np.isin(np.asarray(seen.rewards).astype(np.float64), true).any()


def test_pref_sac_state_round_trips_through_a_checkpoint(tmp_path):
    actor, learner = _nodes("pref_sac", {"learning_starts": 50, "batch_size": 32, "hidden": [16, 16]})
    steps = 0
    while steps < 120:
        report, items = actor.run(1, learner.get_variables())
        steps += report.env_steps
        learner.learn(steps, items)
    save_checkpoint(tmp_path / "ckpt", {"program": learner.state()})
    _, fresh = _nodes("pref_sac", {"learning_starts": 50, "batch_size": 32, "hidden": [16, 16]})
    tree, _ = load_checkpoint(tmp_path / "ckpt")
    fresh.load_state(tree["program"])
    a, b = learner.learner.model, fresh.learner.model
    obs, act = a.buffer.recent(50)
    np.testing.assert_array_equal(a.reward(obs, act), b.reward(obs, act))
    assert (a.asked, a.env_steps, a.labels.tolist()) == (b.asked, b.env_steps, b.labels.tolist())
    np.testing.assert_array_equal(a.first.obs, b.first.obs)
    assert (a.last_query, a.trained, a.norm.state()["count"]) == (b.last_query, b.trained, b.norm.state()["count"])
    assert a.query(3) == b.query(3) == 3  # generators restored: the resumed model asks the very same pairs next
    np.testing.assert_array_equal(a.first.obs, b.first.obs)
    assert a.labels.tolist() == b.labels.tolist()


def test_pref_configs_refuse_what_would_leak_or_break_the_reward():
    with pytest.raises(ConfigError, match="n_step=1"):
        _nodes("pref_sac", {"n_step": 3})
    with pytest.raises(ConfigError, match="normalize_reward=false"):
        _nodes("pref_ppo", {"normalize_reward": True})
    with pytest.raises(ConfigError, match="initial_labels"):
        _nodes("pref_sac", {"initial_labels": 50, "max_labels": 10})
    with pytest.raises(ConfigError, match="heldout_segments must be >= 2"):  # one segment makes no pair
        _nodes("pref_sac", {"heldout_segments": 1})
    with pytest.raises(ConfigError, match="actor_priorities=false"):  # actors' TD errors use the env's reward
        _nodes("pref_sac", {"prioritized": True, "actor_priorities": True})


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_a_nonfinite_env_reward_stays_out_of_the_segments_or_stops(policy):
    from shoal.core import nonfinite

    actor, learner = _nodes("pref_sac", {"learning_starts": 50, "batch_size": 32, "hidden": [16, 16]})
    nonfinite.configure(learner.learner, policy)
    report, items = actor.run(60, learner.get_variables())
    items["reward"][10] = np.nan
    if policy == "stop":
        with pytest.raises(nonfinite.NonFiniteError, match="non-finite env reward handed to the reward model"):
            learner.learn(report.env_steps, items)
        return
    metrics = learner.learn(report.env_steps, items)
    model = learner.learner.model
    assert metrics["reward_model_nonfinite_updates"] == 1.0 and model.env_steps == 60 and model.buffer.added == 59
    segs = model.buffer.sample(500, 5, np.random.default_rng(0))
    assert segs is not None and np.isfinite(segs.true_reward).all()
    # Step 11 (now in slot 10) starts a new chain: no segment joins steps 9 and 11 across the NaN.
    assert np.array_equal(model.buffer.obs[10], items["obs"][11]) and model.buffer.run[10] == 1


def test_a_nonfinite_observation_stays_out_of_the_segments_and_the_normaliser():
    actor, learner = _nodes("pref_sac", {"learning_starts": 50, "batch_size": 32, "hidden": [16, 16]})
    report, items = actor.run(60, learner.get_variables())
    learner.learn(report.env_steps, items)  # trained on the first labels
    model = learner.learner.model
    assert model.trained
    report, items = actor.run(20, learner.get_variables())
    items["obs"][5, 0] = np.inf  # an env glitch
    learner.learn(80, items)
    assert model.buffer.added == 79 and model.guard.skipped == 1  # left out and counted
    assert np.isfinite(model.norm.stats.mean) and np.isfinite(model.norm.stats.var)
    obs, act = model.buffer.recent(79)
    assert np.isfinite(obs).all() and np.isfinite(model.reward(obs, act)).all()


def test_training_with_the_terminal_source_reads_the_answers_from_stdin(tmp_path, monkeypatch, capsys):
    import io

    import shoal

    answers = ["what?\n"] + ["1\n", "2\n", "=\n"] * 20
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(answers)))
    run = shoal.train("pref_sac", ENV, steps=160, seed=0, run_dir=tmp_path / "run", quiet=True, tensorboard=False,
                      overrides={"preference_source": "terminal", "learning_starts": 60, "initial_labels": 6,
                                 "max_labels": 12, "label_every": 50, "label_decay_steps": 50, "segment_length": 10,
                                 "reward_updates": 5, "hidden": [8], "batch_size": 16, "eval_episodes": 1,
                                 "eval_max_steps": 20})
    shown = capsys.readouterr().out
    from shoal.agents.preference.schedule import LabelSchedule

    labels = [r["labels"] for r in run.history if "labels" in r][-1]
    expected = LabelSchedule(12, 6, every=50, start=60, horizon=160, tau=50).target(111)  # queries at steps 61 and 111
    assert labels == expected == 10
    assert shown.count("which is better?") == expected + 1  # the first pair was asked twice
    assert "please type 1, 2 or = (got 'what?')" in shown
