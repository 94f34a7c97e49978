"""REINFORCE and one-step actor-critic math against hand-computed returns, log-probs and TD errors.

(These live beside the tabular tests: the textbook methods share this test folder.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shoal.agents.pg.episodic import Episode, EpisodeActor
from shoal.agents.pg.one_step_ac import OneStepACConfig, OneStepACLearner, one_step_ac_loss, one_step_targets
from shoal.agents.pg.reinforce import ReinforceConfig, ReinforceLearner, episode_returns, reinforce_loss, reinforce_weights
from shoal.agents.pg.vanilla import make_vanilla_networks
from shoal.core.types import EnvSpec, StepResult
from shoal.nets.heads import Categorical

# A fixed episode: rewards 1, 0, 2 then termination, gamma = 0.5.
#   G_2 = 2, G_1 = 0 + 0.5 * 2 = 1, G_0 = 1 + 0.5 * 1 = 1.5
# Logits per step and the actions taken: softmax([0, ln 3]) = (1/4, 3/4), softmax([ln 3, 0]) = (3/4, 1/4), softmax([0, 0]).
LOGITS = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0], [0.0, 0.0]])
ACTIONS = torch.tensor([1, 0, 1])
LOGP = [math.log(0.75), math.log(0.75), math.log(0.5)]
RETURNS = [1.5, 1.0, 2.0]


def _episode(rewards: list[float], terminated: bool = True, final_obs: float = 9.0) -> Episode:
    n = len(rewards)
    return Episode(torch.zeros(n, 4), torch.zeros(n, dtype=torch.int64), torch.tensor(rewards), terminated,
                   not terminated, torch.full((4,), final_obs))


def test_returns_of_a_fixed_episode() -> None:
    assert episode_returns([_episode([1.0, 0.0, 2.0])], gamma=0.5).tolist() == pytest.approx(RETURNS)


def test_returns_of_several_episodes_and_truncation_bootstrap() -> None:
    eps = [_episode([1.0, 0.0, 2.0]), _episode([1.0, 1.0], terminated=False)]
    # Second episode truncated: without a value its return ends at 0, with V(final) = 4: G_1 = 1 + 0.5 * 4 = 3, G_0 = 2.5.
    assert episode_returns(eps, 0.5).tolist() == pytest.approx(RETURNS + [1.5, 1.0])
    assert episode_returns(eps, 0.5, final_values=[0.0, 4.0]).tolist() == pytest.approx(RETURNS + [2.5, 3.0])


def test_log_probs_by_hand() -> None:
    assert Categorical.log_prob(LOGITS, ACTIONS).tolist() == pytest.approx(LOGP)


def test_reinforce_loss_without_normalisation() -> None:
    logp = Categorical.log_prob(LOGITS, ACTIONS)
    loss, w = reinforce_loss(logp, torch.tensor(RETURNS), normalize=False)
    assert w.tolist() == pytest.approx(RETURNS)
    assert float(loss) == pytest.approx(-(1.5 * LOGP[0] + 1.0 * LOGP[1] + 2.0 * LOGP[2]) / 3)


def test_reinforce_loss_normalised_and_with_baseline() -> None:
    logp = Categorical.log_prob(LOGITS, ACTIONS)
    # mean(G) = 1.5, sample std = sqrt((0 + 0.25 + 0.25) / 2) = 0.5: weights (0, -1, 1)
    loss, w = reinforce_loss(logp, torch.tensor(RETURNS), normalize=True)
    assert w.tolist() == pytest.approx([0.0, -1.0, 1.0], abs=1e-6)
    assert float(loss) == pytest.approx(-(-LOGP[1] + LOGP[2]) / 3, abs=1e-6)
    # Baseline V = (1, 1, 1): weights G - V = (0.5, 0, 1), no gradient flows into V through them.
    values = torch.ones(3, requires_grad=True)
    w = reinforce_weights(torch.tensor(RETURNS), values, normalize=False)
    assert w.tolist() == pytest.approx([0.5, 0.0, 1.0]) and not w.requires_grad


def test_reinforce_loss_gradient_pushes_up_good_actions() -> None:
    logits = LOGITS.clone().requires_grad_(True)
    loss, _ = reinforce_loss(Categorical.log_prob(logits, ACTIONS), torch.tensor(RETURNS), normalize=False)
    loss.backward()
    # d(-G log softmax(z)_a)/dz = -G (onehot(a) - p) / T: step 0, action 1, p = (1/4, 3/4), G = 1.5.
    assert logits.grad[0].tolist() == pytest.approx([1.5 * 0.25 / 3, -1.5 * 0.25 / 3])


def _spec() -> EnvSpec:
    return EnvSpec("test", (4,), np.dtype(np.float32), True, 2)


def test_learner_loss_matches_hand_computation_and_waits_for_episodes() -> None:
    torch.manual_seed(0)
    net = make_vanilla_networks(ReinforceConfig(), _spec())
    learner = ReinforceLearner(net, ReinforceConfig(episodes_per_update=2, baseline=False, normalize_returns=False, gamma=0.5))
    obs = torch.randn(3, 4)
    ep = Episode(obs, ACTIONS, torch.tensor([1.0, 0.0, 2.0]), True, False, torch.zeros(4))
    with torch.no_grad():
        logp = net.dist.log_prob(net(obs)[0], ACTIONS)
    assert learner.step([[ep]]) == {} and learner.version == 0  # one episode of two: nothing learned yet
    metrics = learner.step([[ep]])
    expected = -float((logp * torch.tensor(RETURNS)).mean())  # the same episode twice: the same mean
    assert metrics["loss_pi"] == pytest.approx(expected, rel=1e-5) and learner.version == 1
    assert metrics["return_mean"] == pytest.approx(1.5)


def test_episode_actor_hands_over_only_completed_episodes() -> None:
    net = make_vanilla_networks(ReinforceConfig(), _spec())
    actor = EpisodeActor(net, _spec(), num_envs=2, seed=0)
    obs = np.zeros((2, 4), np.float32)
    for t in range(3):
        a = actor.select_action(obs + t)
        done = np.array([t == 1, False])
        actor.observe(a, StepResult(obs, np.array([1.0, 2.0], np.float32), done, np.zeros(2, bool), obs + 7))
    eps = actor.drain()
    assert len(eps) == 1 and len(eps[0]) == 2 and eps[0].terminated and eps[0].rewards.tolist() == [1.0, 1.0]
    assert eps[0].obs[:, 0].tolist() == [0.0, 1.0] and eps[0].final_obs[0] == 7.0
    assert actor.drain() == []


def test_one_step_targets_and_loss_by_hand() -> None:
    rewards = torch.tensor([[1.0, 1.0, 1.0]])
    next_v = torch.tensor([[2.0, 2.0, 2.0]])
    term = torch.tensor([[0.0, 1.0, 0.0]])
    trunc = torch.tensor([[0.0, 0.0, 1.0]])
    final_v = torch.tensor([[0.0, 0.0, 4.0]])
    # running: 1 + 0.9 * 2 = 2.8; terminated: 1; truncated: 1 + 0.9 * V(final) = 4.6
    targets = one_step_targets(rewards, next_v, term, trunc, final_v, 0.9)
    assert targets.tolist() == [pytest.approx([2.8, 1.0, 4.6])]
    values = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    logp = torch.log(torch.tensor([0.5, 0.25, 0.5]))
    loss_pi, loss_v, delta = one_step_ac_loss(logp, values, targets[0], actor_discount=torch.tensor([1.0, 0.9, 0.81]))
    assert delta.tolist() == pytest.approx([1.8, 0.0, 3.6])
    assert float(loss_pi) == pytest.approx(-(1.8 * math.log(0.5) + 0.81 * 3.6 * math.log(0.5)) / 3)
    assert float(loss_v.detach()) == pytest.approx(0.5 * (1.8**2 + 3.6**2) / 3)


def test_one_step_learner_runs_on_gaussian_actions() -> None:
    from shoal.agents.pg.one_step_ac import StepCountingActor

    spec = EnvSpec("test", (3,), np.dtype(np.float32), False, 2, np.full(2, -1.0, np.float32), np.ones(2, np.float32))
    cfg = OneStepACConfig(num_envs=2, discount_actor=True)
    net = make_vanilla_networks(cfg, spec)
    actor = StepCountingActor(net, spec, 1, 2, 0)
    learner = OneStepACLearner(make_vanilla_networks(cfg, spec), cfg)
    actor.load_variables(*learner.get_variables())
    obs = np.zeros((2, 3), np.float32)
    a = actor.select_action(obs)
    assert a.shape == (2, 2)
    actor.observe(a, StepResult(obs, np.ones(2, np.float32), np.array([False, True]), np.zeros(2, bool), obs))
    m = learner.step([actor.drain()])
    assert learner.version == 1 and np.isfinite(m["loss_pi"]) and m["td_error_abs"] > 0
