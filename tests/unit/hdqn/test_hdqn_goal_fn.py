"""A user goal function (``goal_fn=module:function``, ``num_goals=N``) on an env with Box observations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shoal
from shoal.agents.hdqn.builder import HDQNBuilder
from shoal.agents.hdqn.config import HDQNConfig
from shoal.core.types import StepResult
from shoal.envs.make import env_spec
from shoal.envs.toy.stochastic_decision import one_hot_stochastic_decision
from shoal.errors import ConfigError

#: This module, as the goal functions' module (pytest puts the test folder on the path).
HERE = __name__


def ends(obs: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """Two goals on one-hot chain states: 0 = the left end (s1 or s2), 1 = the right end (s5 or s6)."""
    state = obs.argmax(-1)
    return np.where(goals == 0, state <= 1, state >= 4)


def wrong_shape(obs: np.ndarray, goals: np.ndarray) -> np.ndarray:
    return np.zeros((len(goals), 2), bool)


NOT_A_FUNCTION = 3


def _builder(goal_fn: str, num_goals: int = 2) -> HDQNBuilder:
    return HDQNBuilder(HDQNConfig(goal_fn=goal_fn, num_goals=num_goals, hidden=(8,)), env_spec(one_hot_stochastic_decision),
                       total_steps=1000, seed=0)


def test_the_goal_function_decides_the_intrinsic_reward_and_the_spans() -> None:
    builder = _builder(f"{HERE}:ends")
    assert builder.goals.num_goals == 2 and builder.goals.feature_dim == 6
    nets = builder.make_networks()
    assert nets.meta.num_actions == 2 and nets.controller._linears[0].in_features == 6 + 2
    actor = builder.make_actor(nets, 2, seed=0)
    eye = np.eye(6, dtype=np.int64)
    obs = eye[[2, 3]]
    actor.observe_first(obs)
    actor.select_action(obs)
    actor.goal[:] = [1, 0]  # copy 0 heads for the right end, copy 1 for the left
    actor.select_action(obs)
    nxt = eye[[4, 2]]  # copy 0 reaches s5 (right end); copy 1 is not at the left end yet
    actor.observe(np.array([1, 0]), StepResult(nxt, np.zeros(2, np.float32), np.zeros(2, bool), np.zeros(2, bool), nxt))
    d = actor.drain()
    assert d["controller"]["reward"].tolist() == [1.0, 0.0]
    assert d["controller"]["discount"].tolist() == pytest.approx([0.0, 0.99])
    assert d["meta"]["action"].tolist() == [1]  # only copy 0's span ended
    np.testing.assert_array_equal(d["meta"]["obs"], eye[[2]].astype(np.float32))
    np.testing.assert_array_equal(d["meta"]["next_obs"], eye[[4]].astype(np.float32))
    # The networks see the Box observation itself, then the goal one-hot.
    np.testing.assert_array_equal(d["controller"]["obs"], np.concatenate([eye[[2, 3]], np.eye(2)[[1, 0]]], 1))
    assert actor.goal.tolist() == [-1, 0]


def test_a_run_with_a_goal_function_trains_and_evaluates(tmp_path: Path) -> None:
    run = shoal.train("hdqn", one_hot_stochastic_decision, steps=800, seed=0, run_dir=tmp_path / "run", quiet=True,
                      tensorboard=False, overrides={"goal_fn": "shoal.envs.toy.stochastic_decision:one_hot_state_reached",
                                                    "num_goals": 6, "learning_starts": 200, "eval_episodes": 5})
    assert run.env_steps == 800 and run.eval["episodes"] == 5
    assert any("controller_loss" in r for r in run.history)


@pytest.mark.parametrize("path,message", [
    ("no_such_module_hdqn:f", "cannot be imported"),
    (f"{HERE}:missing", "has no 'missing'"),
    (f"{HERE}:NOT_A_FUNCTION", "not a function"),
])
def test_a_bad_goal_function_is_a_config_error(path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _builder(path)


def test_a_goal_function_must_return_one_boolean_per_observation() -> None:
    builder = _builder(f"{HERE}:wrong_shape")
    with pytest.raises(ConfigError, match=r"shape \[2\]"):
        builder.goals.reached(np.eye(6)[[1, 2]], np.array([0, 1]))
