"""h-DQN's goal bookkeeping against a hand-worked scripted episode: intrinsic rewards, controller and meta
transitions (start state, summed extrinsic reward, end state, discounts), success rates and epsilons."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shoal.agents.hdqn.actor import HDQNActor, HDQNPolicy
from shoal.agents.hdqn.builder import HDQNBuilder
from shoal.agents.hdqn.config import HDQNConfig
from shoal.agents.hdqn.goals import SuccessRates
from shoal.agents.hdqn.networks import HDQNNetworks
from shoal.core.types import StepResult
from shoal.envs.make import env_spec

ENV = "shoal/StochasticDecision-v0"
GAMMA = 0.9
#: The meta-controller's greedy goal in each state of the scripted episodes.
GOAL_IN = {0: 1, 1: 3, 2: 4, 3: 5, 4: 5, 5: 0}


def set_q_table(net: torch.nn.Module, table: np.ndarray) -> None:
    """Make a one-hidden-layer QNetwork of width S on one-hot inputs compute ``Q(s, .) = table[s]``
    (hidden layer the identity on the first S inputs; later inputs, a goal one-hot, ignored)."""
    lin, head = net._linears[0], net.q
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:, : table.shape[0]] = torch.eye(table.shape[0])
        lin.bias.zero_()
        head.weight.copy_(torch.as_tensor(table.T, dtype=torch.float32))
        head.bias.zero_()


def scripted_builder(**overrides) -> tuple[HDQNBuilder, HDQNNetworks]:
    cfg = HDQNConfig(gamma=GAMMA, hidden=(6,), epsilon_start=0.0, epsilon_final=0.0, success_window=4, **overrides)
    builder = HDQNBuilder(cfg, env_spec(ENV), total_steps=1000, seed=0)
    nets = builder.make_networks()
    table = np.zeros((6, 6))
    for s, g in GOAL_IN.items():
        table[s, g] = 1.0
    set_q_table(nets.meta, table)
    return builder, nets


def step(next_state: list[int], reward: list[float], terminated: list[bool], truncated: list[bool] | None = None,
         reset_to: int = 1) -> StepResult:
    """A vector step: where an episode ends, ``next_obs`` is the reset state and ``final_obs`` the state reached."""
    s = np.array(next_state)
    term = np.array(terminated)
    trunc = np.zeros_like(term) if truncated is None else np.array(truncated)
    done = term | trunc
    return StepResult(np.where(done, reset_to, s), np.array(reward, np.float32), term, trunc, s.copy())


def run_script(actor: HDQNActor, first: list[int], steps: list[StepResult]) -> list[np.ndarray]:
    """Feed the actor ``steps`` from observations ``first``; returns the goal each copy pursued at each step."""
    obs = np.array(first)
    actor.observe_first(obs)
    pursued = []
    for st in steps:
        action = actor.select_action(obs)
        pursued.append(actor.goal.copy())
        actor.observe(action, st)
        obs = st.next_obs
    return pursued


#: Episode 1 (gamma 0.9): s2 -> goal s4 (index 3) reached in 2 steps; s4 -> goal s6 (5) through a slip,
#: collecting 0.5, 0.25 and 0.125 on the way; s6 -> goal s1 (0) back down, where the episode ends with 1.
EPISODE_1 = [
    ([2], [0.0], [False]), ([3], [0.0], [False]),  # goal 3 from 1: reached at the 2nd step
    ([4], [0.5], [False]), ([3], [0.25], [False]), ([4], [0.0], [False]), ([5], [0.125], [False]),  # goal 5 from 3
    ([4], [0.0], [False]), ([3], [0.0], [False]), ([2], [0.0], [False]), ([1], [0.0], [False]),
    ([0], [1.0], [True]),  # goal 0 from 5: reached where the episode terminates
]
#: Episode 2: goal 3 from s2, but the first step falls into s1: terminated, goal not reached.
EPISODE_2 = [([0], [0.01], [True])]
#: Episode 3: goal 3 from s2, cut by the time limit after one step (truncated, not terminated).
EPISODE_3 = [([2], [0.0], [False], [True])]


def scripted_steps(script) -> list[StepResult]:
    return [step(*s) for s in script]


def test_intrinsic_reward_is_one_exactly_on_the_step_the_goal_is_reached() -> None:
    builder, nets = scripted_builder()
    actor = builder.make_actor(nets, 1, seed=0)
    pursued = run_script(actor, [1], scripted_steps(EPISODE_1))
    assert [int(g[0]) for g in pursued] == [3, 3, 5, 5, 5, 5, 0, 0, 0, 0, 0]
    c = actor.drain()["controller"]
    assert c["reward"].tolist() == [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    # The controller's episode for a goal ends where it is reached (and at the env's termination): discount 0.
    assert c["discount"].tolist() == pytest.approx([GAMMA, 0, GAMMA, GAMMA, GAMMA, 0, GAMMA, GAMMA, GAMMA, GAMMA, 0])
    # Inputs: one-hot state then one-hot goal; next inputs keep the goal of the step (not the next one).
    states = [1, 2, 3, 4, 3, 4, 5, 4, 3, 2, 1]
    nexts = [2, 3, 4, 3, 4, 5, 4, 3, 2, 1, 0]
    goals = [3, 3, 5, 5, 5, 5, 0, 0, 0, 0, 0]
    eye = np.eye(6, dtype=np.float32)
    np.testing.assert_array_equal(c["obs"], np.concatenate([eye[states], eye[goals]], 1))
    np.testing.assert_array_equal(c["next_obs"], np.concatenate([eye[nexts], eye[goals]], 1))
    assert len(c["action"]) == 11


def test_meta_transitions_span_from_the_goal_choice_to_its_end() -> None:
    builder, nets = scripted_builder()
    actor = builder.make_actor(nets, 1, seed=0)
    run_script(actor, [1], scripted_steps(EPISODE_1))
    m = actor.drain()["meta"]
    eye = np.eye(6, dtype=np.float32)
    # (s0, g, F, s_end, discount), worked by hand from EPISODE_1.
    np.testing.assert_array_equal(m["obs"], eye[[1, 3, 5]])
    assert m["action"].tolist() == [3, 5, 0]
    assert m["reward"].tolist() == pytest.approx([0.0, 0.5 + 0.25 + 0.0 + 0.125, 1.0])
    np.testing.assert_array_equal(m["next_obs"], eye[[3, 5, 0]])
    assert m["discount"].tolist() == pytest.approx([GAMMA, GAMMA, 0.0])  # bootstraps unless the episode terminated


def test_a_span_ends_with_the_episode_whether_it_terminates_or_is_truncated() -> None:
    builder, nets = scripted_builder()
    actor = builder.make_actor(nets, 1, seed=0)
    run_script(actor, [1], scripted_steps(EPISODE_2))
    d = actor.drain()
    assert d["controller"]["reward"].tolist() == [0.0] and d["controller"]["discount"].tolist() == [0.0]
    assert d["meta"]["action"].tolist() == [3] and d["meta"]["reward"].tolist() == pytest.approx([0.01])
    assert d["meta"]["next_obs"].argmax(1).tolist() == [0] and d["meta"]["discount"].tolist() == [0.0]
    run_script(actor, [1], scripted_steps(EPISODE_3))
    d = actor.drain()
    # Truncation is not termination: both levels bootstrap from the state reached.
    assert d["controller"]["reward"].tolist() == [0.0] and d["controller"]["discount"].tolist() == pytest.approx([GAMMA])
    assert d["controller"]["next_obs"][0, :6].argmax() == 2
    assert d["meta"]["obs"].argmax(1).tolist() == [1] and d["meta"]["next_obs"].argmax(1).tolist() == [2]
    assert d["meta"]["discount"].tolist() == pytest.approx([GAMMA])
    # The next step starts a new span: the actor chose a fresh goal for the reset state.
    assert actor.goal.tolist() == [-1]


def test_goal_attempts_and_successes_are_counted_per_goal() -> None:
    builder, nets = scripted_builder()
    actor = builder.make_actor(nets, 1, seed=0)
    for script in (EPISODE_1, EPISODE_2, EPISODE_3):
        run_script(actor, [1], scripted_steps(script))
    d = actor.drain()
    assert d["goal_attempts"].tolist() == [1, 0, 0, 3, 0, 1]
    assert d["goal_successes"].tolist() == [1, 0, 0, 1, 0, 1]
    assert actor.success.attempts.tolist() == [1, 0, 0, 3, 0, 1]
    # Goal 3: reached, then failed twice -> 1/3; goals 0 and 5 always reached; the others never tried.
    np.testing.assert_allclose(actor.success.rates(), [1, 0, 0, 1 / 3, 0, 1])
    np.testing.assert_allclose(actor.controller_epsilons(), [0.1, 1, 1, 2 / 3, 1, 0.1])
    assert actor.drain() is None  # nothing new since


def test_copies_keep_their_own_spans() -> None:
    """Two copies stepped together give, copy by copy, the items each gives alone."""
    builder, nets = scripted_builder()
    a_alone, b_alone = builder.make_actor(nets, 1, seed=0), builder.make_actor(nets, 1, seed=0)
    ep_a = EPISODE_1
    ep_b = EPISODE_2 + [([2], [0.0], [False]), ([3], [0.0], [False])] + EPISODE_1[2:]  # 12 steps: ends one later
    ep_a = ep_a + [([2], [0.0], [False])]  # after its episode, copy a starts another
    run_script(a_alone, [1], scripted_steps(ep_a))
    run_script(b_alone, [1], scripted_steps(ep_b))
    both = builder.make_actor(nets, 2, seed=0)
    joint = [step([sa[0][0], sb[0][0]], [sa[1][0], sb[1][0]], [sa[2][0], sb[2][0]]) for sa, sb in zip(ep_a, ep_b)]
    run_script(both, [1, 1], joint)
    da, db, dj = a_alone.drain(), b_alone.drain(), both.drain()
    for level in ("controller", "meta"):
        n = len(dj[level]["reward"])
        assert n == len(da[level]["reward"]) + len(db[level]["reward"])
    # Controller items come one vector step at a time, copy 0 then copy 1.
    for k in ("obs", "reward", "discount", "next_obs"):  # (actions are random draws: the controller explores)
        np.testing.assert_array_equal(dj["controller"][k][0::2], da["controller"][k])
        np.testing.assert_array_equal(dj["controller"][k][1::2], db["controller"][k])
    # Meta items, identified by their start state and goal, are the union of the copies' own.
    rows = lambda d: sorted(zip(d["meta"]["obs"].argmax(1).tolist(), d["meta"]["action"].tolist(),  # noqa: E731
                                np.round(d["meta"]["reward"], 6).tolist(), d["meta"]["next_obs"].argmax(1).tolist(),
                                d["meta"]["discount"].tolist()))
    assert rows(dj) == sorted(rows(da) + rows(db))


def test_success_rate_rule_over_the_window() -> None:
    rates = SuccessRates(num_goals=3, window=4, min_epsilon=0.1)
    np.testing.assert_allclose(rates.epsilons(), [1, 1, 1])  # never attempted: rate 0, epsilon 1
    rates.record(np.array([0, 0, 0, 0, 2]), np.array([1, 1, 0, 1, 1], bool))
    np.testing.assert_allclose(rates.rates(), [0.75, 0, 1])
    np.testing.assert_allclose(rates.epsilons(), [0.25, 1, 0.1])  # max(0.1, 1 - rate)
    rates.record(np.array([0, 0]), np.array([0, 0], bool))  # the window now holds 0's attempts 3..6: 0, 1, 0, 0
    np.testing.assert_allclose(rates.rates(), [0.25, 0, 1])
    np.testing.assert_allclose(rates.epsilons(), [0.75, 1, 0.1])
    restored = SuccessRates(3, 4, 0.1)
    restored.load_state(rates.state())
    np.testing.assert_array_equal(restored.epsilons(), rates.epsilons())


def test_the_controller_explores_each_copy_at_its_goals_rate() -> None:
    """The actor's controller picks non-greedy actions at epsilon_g / 2 (a random pick of 2 actions) per copy."""
    builder, nets = scripted_builder()
    with torch.no_grad():  # the controller's greedy action is 0 everywhere
        nets.controller.q.weight.zero_()
        nets.controller.q.bias.copy_(torch.tensor([1.0, 0.0]))
    n = 4000
    actor = builder.make_actor(nets, n, seed=1)
    actor.success.record(np.array([3] * 4), np.array([1, 0, 0, 0], bool))  # goal 3: rate 1/4 -> epsilon 0.75
    actor.success.record(np.array([5] * 4), np.array([1, 1, 1, 1], bool))  # goal 5: rate 1 -> epsilon 0.1
    obs = np.where(np.arange(n) < n // 2, 1, 3)  # greedy goals: 3 from state 1, 5 from state 3
    actor.observe_first(obs)
    counts = np.zeros(2)
    for _ in range(10):
        a = actor.select_action(obs)
        counts += [a[: n // 2].mean(), a[n // 2:].mean()]
        actor.goal[:] = np.where(np.arange(n) < n // 2, 3, 5)  # keep the goals (no observe between the calls)
    frac = counts / 10
    # 20,000 draws per half: one standard deviation is at most 0.0035.
    assert frac[0] == pytest.approx(0.375, abs=0.015) and frac[1] == pytest.approx(0.05, abs=0.015)


def test_meta_epsilon_anneals_linearly_over_the_run() -> None:
    cfg = HDQNConfig(epsilon_start=1.0, epsilon_final=0.1, exploration_fraction=0.5)
    builder = HDQNBuilder(cfg, env_spec(ENV), total_steps=1000, seed=0)
    actor = builder.make_actor(builder.make_networks(), 1, actor_id=0, num_actors=2)
    eps = []
    for steps in (0, 50, 125, 250, 400):
        actor.env_steps = steps  # this actor's steps; the run's are twice as many (2 actors)
        eps.append(actor.meta_epsilon)
    # Run steps 0, 100, 250, 500, 800 of a 500-step schedule from 1 to 0.1.
    assert eps == pytest.approx([1.0, 0.82, 0.55, 0.1, 0.1])


def test_greedy_policy_follows_the_goals_at_both_levels() -> None:
    """The evaluation policy keeps each copy's goal until an observation reaches it, then asks the greedy
    meta-controller again; its actions are the controller's greedy actions for (state, goal)."""
    builder, nets = scripted_builder()
    policy = builder.make_policy(nets, evaluation=True)
    assert isinstance(policy, HDQNPolicy)
    assert policy.meta_epsilon == 0.0 and policy.controller_epsilon == 0.0

    def greedy_actions(states: list[int], goals: list[int]) -> list[int]:
        x = np.concatenate([np.eye(6)[states], np.eye(6)[goals]], 1)
        with torch.no_grad():
            return nets.controller(torch.as_tensor(x, dtype=torch.float32)).argmax(1).tolist()

    for states, goals in [([1, 3], [3, 5]),  # first call: goals from the meta-controller's table
                          ([2, 4], [3, 5]),  # not reached yet: the goals stay
                          ([3, 5], [5, 0]),  # both reached: new goals from where they are
                          ([2, 2], [5, 0])]:
        actions = policy(np.array(states))
        assert policy.goal.tolist() == goals
        assert actions.tolist() == greedy_actions(states, goals)
    policy(np.array([1, 1, 1]))  # a new batch size: a fresh evaluation
    assert policy.goal.tolist() == [3, 3, 3]
