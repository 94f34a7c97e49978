"""The tabular actor: epsilon-greedy choice, Sarsa's pre-picked next action, what it drains."""

from __future__ import annotations

import numpy as np
import pytest

from shoal.agents.tabular.actor import TabularActor, TabularPolicy
from shoal.agents.tabular.builder import TabularBuilder
from shoal.agents.tabular.config import QLearningConfig, SarsaConfig
from shoal.agents.tabular.networks import QTable
from shoal.core.types import StepResult
from shoal.envs.make import env_spec
from shoal.errors import EnvError


def _step(next_obs, reward, terminated, truncated, final_obs) -> StepResult:
    return StepResult(np.array(next_obs), np.array(reward, np.float32), np.array(terminated), np.array(truncated),
                      np.array(final_obs))


def test_sarsa_actor_takes_the_action_it_bootstrapped_from() -> None:
    net = QTable(4, 2)
    actor = TabularActor(net, SarsaConfig(epsilon=0.5, rollout_length=3), num_envs=2, seed=0, total_steps=100)
    actor.observe_first(np.array([0, 1]))
    a0 = actor.select_action(np.array([0, 1]))
    actor.observe(a0, _step([2, 3], [0.0, 1.0], [False, False], [False, False], [2, 3]))
    a1 = actor.select_action(np.array([2, 3]))
    actor.observe(a1, _step([0, 1], [0.0, 0.0], [True, False], [False, True], [3, 2]))  # both copies end
    a2 = actor.select_action(np.array([0, 1]))
    actor.observe(a2, _step([2, 3], [0.0, 0.0], [False, False], [False, False], [2, 3]))
    d = actor.drain()
    assert d["s"].tolist() == [[0, 1], [2, 3], [0, 1]]
    assert d["s2"].tolist() == [[2, 3], [3, 2], [2, 3]]  # final observations where episodes ended
    assert d["a2"][0].tolist() == a1.tolist()  # a' of step 0 is the action actually taken at step 1
    # Copy 0 is never truncated: each a' is the action it actually takes next, across its episode end too.
    assert d["a2"][1][0] == a2[0] and d["a"][1:, 0].tolist() == d["a2"][:2, 0].tolist()
    assert d["first"].tolist() == [[True, True], [False, False], [True, True]]
    assert d["terminated"][1].tolist() == [True, False] and d["truncated"][1].tolist() == [False, True]
    assert actor.drain()["s"].shape == (0, 2)


def test_sarsa_bootstraps_a_truncated_episode_from_an_action_at_its_final_state() -> None:
    net = QTable(4, 2)
    net.numpy()[2] = [0.0, 1.0]  # greedy at the final state 2: action 1
    net.numpy()[1] = [1.0, 0.0]  # greedy at the reset state 1: action 0
    actor = TabularActor(net, SarsaConfig(epsilon=0.0, rollout_length=2), num_envs=1, seed=0, total_steps=100)
    actor.observe_first(np.array([3]))
    a0 = actor.select_action(np.array([3]))
    actor.observe(a0, _step([1], [0.0], [False], [True], [2]))  # time limit at state 2; the env reset to 1
    a1 = actor.select_action(np.array([1]))
    actor.observe(a1, _step([1], [0.0], [False], [False], [1]))
    d = actor.drain()
    assert d["s2"][0].tolist() == [2] and d["a2"][0].tolist() == [1]  # a' picked at the final state
    assert a1.tolist() == [0]  # while the next episode starts with the action picked at its reset state


def test_q_learning_actor_uses_new_table_and_skips_same_version() -> None:
    net = QTable(3, 2)
    actor = TabularActor(net, QLearningConfig(epsilon=0.0), num_envs=1, seed=0, total_steps=100)
    q = np.zeros((3, 2))
    q[:, 1] = 1.0
    import torch

    actor.load_variables(1, {"q": torch.from_numpy(q)})
    assert actor.select_action(np.array([2])).tolist() == [1]
    actor.load_variables(1, {"q": torch.zeros(3, 2, dtype=torch.float64)})  # same version: ignored
    assert actor.select_action(np.array([2])).tolist() == [1]


def test_greedy_policy_is_deterministic() -> None:
    net = QTable(2, 3)
    net.numpy()[1] = [0.0, 2.0, 2.0]
    assert TabularPolicy(net)(np.array([0, 1])).tolist() == [0, 1]


def test_builder_rejects_continuous_observations() -> None:
    builder = TabularBuilder(QLearningConfig(), env_spec("CartPole-v1"))
    with pytest.raises(EnvError, match="Discrete observations"):
        builder.make_networks()
