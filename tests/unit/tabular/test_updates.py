"""Tabular updates against hand-computed numbers: Q-learning, Sarsa, Sarsa(lambda) traces, schedules."""

from __future__ import annotations

import numpy as np
import pytest

from shoal.agents.tabular.config import QLearningConfig, SarsaConfig, SarsaLambdaConfig
from shoal.agents.tabular.learner import TabularLearner
from shoal.agents.tabular.networks import QTable
from shoal.agents.tabular.update import q_learning_update, sarsa_lambda_update, sarsa_update
from shoal.errors import ConfigError


def _table() -> np.ndarray:
    q = np.zeros((3, 2))
    q[0] = [0.0, 0.2]
    q[1] = [0.5, 2.0]
    return q


def test_q_learning_update_by_hand() -> None:
    q = _table()
    # target = 1 + 0.9 * max(0.5, 2.0) = 2.8; delta = 2.8 - 0.2 = 2.6; Q = 0.2 + 0.1 * 2.6 = 0.46
    delta = q_learning_update(q, 0, 1, 1.0, 1, False, alpha=0.1, gamma=0.9)
    assert delta == pytest.approx(2.6)
    assert q[0, 1] == pytest.approx(0.46)
    assert q[1].tolist() == [0.5, 2.0]  # nothing else moved


def test_q_learning_terminal_does_not_bootstrap() -> None:
    q = _table()
    # target = r = 1; delta = 0.8; Q = 0.2 + 0.5 * 0.8 = 0.6
    assert q_learning_update(q, 0, 1, 1.0, 1, True, alpha=0.5, gamma=0.9) == pytest.approx(0.8)
    assert q[0, 1] == pytest.approx(0.6)


def test_sarsa_update_by_hand() -> None:
    q = _table()
    # target = 1 + 0.9 * Q(1, a'=0) = 1.45 (not the max 2.0); delta = 1.25; Q = 0.2 + 0.1 * 1.25 = 0.325
    delta = sarsa_update(q, 0, 1, 1.0, 1, 0, False, alpha=0.1, gamma=0.9)
    assert delta == pytest.approx(1.25)
    assert q[0, 1] == pytest.approx(0.325)
    q = _table()
    assert sarsa_update(q, 0, 1, 1.0, 1, 0, True, alpha=0.1, gamma=0.9) == pytest.approx(0.8)


# A fixed 3-step trajectory: (s0, a0) -> (s1, a1) -> (s0, a0) -> terminal with reward 1.
# gamma = 0.9, lambda = 0.8, so traces decay by 0.72 after every step; alpha = 0.5; Q starts at 0.
TRAJ = [(0, 0, 0.0, 1, 1, False), (1, 1, 0.0, 0, 0, False), (0, 0, 1.0, 2, 0, True)]
# Traces after each step (after the decay), by hand:
#   step 1: e(0,0) = 1 -> 0.72
#   step 2: e(1,1) = 1 -> 0.72, e(0,0) = 0.72 * 0.72 = 0.5184
#   step 3: accumulating e(0,0) = 0.5184 + 1 = 1.5184 (replacing: 1); then * 0.72
# Only step 3 has a TD error (delta = 1 - 0 = 1), applied with the traces before the decay:
#   accumulating Q(0,0) = 0.5 * 1.5184 = 0.7592, replacing Q(0,0) = 0.5; both Q(1,1) = 0.5 * 0.72 = 0.36
EXPECTED = {
    "accumulating": {"traces": [{(0, 0): 0.72}, {(0, 0): 0.5184, (1, 1): 0.72}, {(0, 0): 1.093248, (1, 1): 0.5184}],
                     "q": {(0, 0): 0.7592, (1, 1): 0.36}},
    "replacing": {"traces": [{(0, 0): 0.72}, {(0, 0): 0.5184, (1, 1): 0.72}, {(0, 0): 0.72, (1, 1): 0.5184}],
                  "q": {(0, 0): 0.5, (1, 1): 0.36}},
}


def _dense(entries: dict[tuple[int, int], float]) -> np.ndarray:
    out = np.zeros((3, 2))
    for k, v in entries.items():
        out[k] = v
    return out


@pytest.mark.parametrize("kind", ["accumulating", "replacing"])
def test_sarsa_lambda_traces_by_hand(kind: str) -> None:
    q, e = np.zeros((3, 2)), np.zeros((3, 2))
    deltas = []
    for (s, a, r, s2, a2, term), want in zip(TRAJ, EXPECTED[kind]["traces"]):
        deltas.append(sarsa_lambda_update(q, e, s, a, r, s2, a2, term, alpha=0.5, gamma=0.9, lam=0.8, kind=kind))
        np.testing.assert_allclose(e, _dense(want), atol=1e-12)
    assert deltas == pytest.approx([0.0, 0.0, 1.0])
    np.testing.assert_allclose(q, _dense(EXPECTED[kind]["q"]), atol=1e-12)


def _batch(traj: list[tuple], first: list[bool]) -> dict:
    cols = list(zip(*traj))
    return {"s": np.array(cols[0])[:, None], "a": np.array(cols[1])[:, None], "r": np.array(cols[2], float)[:, None],
            "s2": np.array(cols[3])[:, None], "a2": np.array(cols[4])[:, None],
            "terminated": np.array(cols[5])[:, None], "truncated": np.zeros((len(traj), 1), bool),
            "first": np.array(first)[:, None], "actor_id": 0}


@pytest.mark.parametrize("kind", ["accumulating", "replacing"])
def test_learner_applies_traces_in_order_and_resets_them_at_episode_start(kind: str) -> None:
    cfg = SarsaLambdaConfig(alpha=0.5, gamma=0.9, lam=0.8, traces=kind)
    learner = TabularLearner(QTable(3, 2), cfg, total_steps=100)
    metrics = learner.step([_batch(TRAJ, [True, False, False])])
    np.testing.assert_allclose(learner.q, _dense(EXPECTED[kind]["q"]), atol=1e-12)
    np.testing.assert_allclose(learner.traces[0][0], _dense(EXPECTED[kind]["traces"][-1]), atol=1e-12)
    assert learner.version == 1 and metrics["alpha"] == 0.5
    # A new episode starts: traces are zeroed before its first step.
    learner.step([_batch([(2, 1, 0.0, 2, 1, False)], [True])])
    # delta = 0 + 0.9 * Q(2,1) - Q(2,1) = 0; only e(2,1) = 0.72 is left.
    np.testing.assert_allclose(learner.traces[0][0], _dense({(2, 1): 0.72}), atol=1e-12)


def test_learner_q_learning_truncation_bootstraps_termination_does_not() -> None:
    learner = TabularLearner(QTable(3, 2), QLearningConfig(alpha=1.0, gamma=0.5), total_steps=100)
    learner.q[1] = [4.0, 2.0]
    batch = _batch([(0, 0, 1.0, 1, 0, False), (0, 1, 1.0, 1, 0, True)], [True, False])
    batch["truncated"][0, 0] = True  # step 1 hit the time limit: bootstrap from max Q(s') = 4
    learner.step([batch])
    assert learner.q[0, 0] == pytest.approx(1.0 + 0.5 * 4.0)
    assert learner.q[0, 1] == pytest.approx(1.0)


def test_learner_sarsa_uses_the_recorded_next_action() -> None:
    learner = TabularLearner(QTable(3, 2), SarsaConfig(alpha=1.0, gamma=0.5), total_steps=100)
    learner.q[1] = [4.0, 2.0]
    learner.step([_batch([(0, 0, 1.0, 1, 1, False)], [True])])
    assert learner.q[0, 0] == pytest.approx(1.0 + 0.5 * 2.0)


def test_learner_state_round_trip() -> None:
    a = TabularLearner(QTable(3, 2), QLearningConfig(), total_steps=10)
    a.q[:] = np.arange(6).reshape(3, 2)
    a.version = 7
    b = TabularLearner(QTable(3, 2), QLearningConfig(), total_steps=10)
    b.load_state(a.state())
    np.testing.assert_array_equal(b.q, a.q)
    assert b.version == 7
    version, variables = a.get_variables()
    assert version == 7 and set(variables) == {"q"}


@pytest.mark.parametrize("cls, values, match", [
    (QLearningConfig, {"alpha": 0.0}, "alpha"),
    (QLearningConfig, {"epsilon": 1.5}, "epsilon"),
    (SarsaLambdaConfig, {"lam": 1.2}, "lam"),
    (SarsaConfig, {"update": "q_learning"}, "sarsa"),
])
def test_config_validation(cls: type, values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cls(**values)
