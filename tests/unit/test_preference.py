"""Reward learning from preferences: the loss, the ensemble's queries, the sources, the schedule, the seam.

Hand-computed values use ``P[seg1 > seg2] = exp(R1) / (exp(R1) + exp(R2))`` and the cross-entropy
of the label ``mu`` (1: the first, 0: the second, 0.5: equal).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from shoal.agents.preference.loss import bradley_terry_loss, preference_disagreement, preference_probability
from shoal.agents.preference.model import OutputNormalizer, RewardEnsemble, model_inputs
from shoal.agents.preference.schedule import LabelSchedule
from shoal.agents.preference.segments import SegmentBuffer, Segments
from shoal.agents.preference.sources import OracleSource, TerminalSource, make_source
from shoal.agents.preference.trainer import ensemble_loss, select_pairs
from shoal.errors import ConfigError


def _segments(true_returns: list[float], length: int = 4, obs_dim: int = 3) -> Segments:
    n = len(true_returns)
    rewards = np.repeat(np.asarray(true_returns, np.float64)[:, None] / length, length, axis=1)
    return Segments(np.zeros((n, length, obs_dim), np.float32), np.zeros((n, length, 1), np.float32), rewards)


# -- the Bradley-Terry loss ---------------------------------------------------------------------------
def test_bradley_terry_loss_equals_hand_computed_value():
    # pair 0: R1=1, R2=0, label 1: P = e/(e+1) = 0.7310586, loss = -ln 0.7310586 = 0.3132617
    # pair 1: R1=0, R2=2, label 0: P = 1/(1+e^2) = 0.1192029, loss = -ln(1 - 0.1192029) = 0.1269280
    loss = bradley_terry_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]))
    assert float(loss) == pytest.approx((0.3132617 + 0.1269280) / 2, abs=1e-6)
    p = preference_probability(torch.tensor([1.0]), torch.tensor([0.0]))
    assert float(p) == pytest.approx(math.exp(1) / (math.exp(1) + math.exp(0)), abs=1e-7)


def test_bradley_terry_equal_label_is_half_of_each_side_and_minimal_at_equal_returns():
    # R1=1, R2=0, label 0.5: 0.5 * (-ln 0.7310586) + 0.5 * (-ln 0.2689414) = 0.5 * (0.3132617 + 1.3132617)
    loss = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.5]))
    assert float(loss) == pytest.approx(0.8132617, abs=1e-6)
    d = torch.zeros(1, requires_grad=True)
    at_equal = bradley_terry_loss(d, torch.zeros(1), torch.tensor([0.5]))
    at_equal.backward()
    assert float(at_equal.detach()) == pytest.approx(math.log(2), abs=1e-7)  # -ln(1/2)
    assert float(d.grad) == pytest.approx(0.0, abs=1e-7)  # the loss of an equal label is flat at R1 == R2


def test_bradley_terry_response_noise_mixes_in_a_random_answer():
    # eps = 0.1: P' = 0.9 * 0.7310586 + 0.05 = 0.7079527; label 1 -> -ln 0.7079527 = 0.3453780
    loss = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0]), response_noise=0.1)
    assert float(loss) == pytest.approx(0.3453780, abs=1e-6)
    # Confident and wrong costs at most -ln(eps / 2), not without bound.
    worst = bradley_terry_loss(torch.tensor([-200.0]), torch.tensor([0.0]), torch.tensor([1.0]), response_noise=0.1)
    assert float(worst) == pytest.approx(-math.log(0.05), abs=1e-5)


def test_ensemble_loss_gives_each_member_the_gradient_of_its_own_loss():
    """Member k's gradient is that of its own mean cross-entropy plus ``l2 * ||W_k||^2``, whatever K (the L2
    term must not weigh K times more against the data in a K-member ensemble)."""
    torch.manual_seed(0)
    K, B, L, l2 = 3, 4, 5, 0.1
    ens = RewardEnsemble(obs_dim=2, act_dim=1, num_members=K, hidden=(8,), activation="tanh")
    first, second = torch.randn(K, B, L, 3), torch.randn(K, B, L, 3)
    labels = torch.tensor([[1.0, 0.0, 0.5, 1.0], [0.0, 0.0, 1.0, 0.5], [1.0, 1.0, 0.0, 0.0]])
    ensemble_loss(ens, first, second, labels, response_noise=0.1, l2=l2).backward()
    grads = [w.grad.clone() for w in ens.weights]
    for k in range(K):  # the slow way: member k alone, its own loss
        ens.zero_grad()
        r1 = ens(first.reshape(K, B * L, 3))[k].reshape(B, L).sum(-1)
        r2 = ens(second.reshape(K, B * L, 3))[k].reshape(B, L).sum(-1)
        own = bradley_terry_loss(r1, r2, labels[k], response_noise=0.1) + l2 * sum((w[k] ** 2).sum() for w in ens.weights)
        own.backward()
        for g, w in zip(grads, ens.weights):
            torch.testing.assert_close(g[k], w.grad[k], rtol=1e-5, atol=1e-6)


def test_discrete_actions_enter_the_reward_model_one_hot():
    """With 3 discrete actions r(s, a) takes a one-hot a: the reward of action 1 is not forced between 0's and 2's."""
    from shoal.agents.preference.config import PrefPPOConfig
    from shoal.agents.preference.trainer import PreferenceRewardModel
    from shoal.core.types import EnvSpec

    rows = model_inputs(np.array([[0.5, -1.0], [2.0, 3.0]]), np.array([[2], [0]]), num_actions=3)
    np.testing.assert_array_equal(rows, [[0.5, -1.0, 0, 0, 1], [2.0, 3.0, 1, 0, 0]])
    spec = EnvSpec("grid", (2,), np.dtype(np.float32), discrete=True, num_actions=3)
    model = PreferenceRewardModel(PrefPPOConfig(reward_hidden=(8,)), spec, total_steps=1000, start=0, seed=0)
    assert model.ensemble.in_dim == 2 + 3 and model.ensemble.num_actions == 3
    obs = np.zeros((3, 2), np.float32)
    with torch.no_grad():  # a linear read-out of the one-hot: rewards 0, 5, 1 for actions 0, 1, 2
        for w in model.ensemble.weights:
            w.zero_()
        for b in model.ensemble.biases:
            b.zero_()
        model.ensemble.weights[0][:, 2:, 0] = torch.tensor([0.0, 5.0, 1.0])
        model.ensemble.weights[1][:, 0, 0] = 1.0
    np.testing.assert_allclose(model.raw_reward(obs, np.array([0, 1, 2])), [0.0, 5.0, 1.0], atol=1e-6)


# -- the ensemble's disagreement ----------------------------------------------------------------------
def test_disagreement_is_the_variance_of_the_members_preferences():
    r1 = torch.tensor([[1.0, 0.0], [1.0, 2.0], [1.0, -2.0]])  # [K=3, N=2]
    r2 = torch.zeros(3, 2)
    var = preference_disagreement(r1, r2)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    p1 = [sig(0.0), sig(2.0), sig(-2.0)]
    mean = sum(p1) / 3
    assert float(var[0]) == pytest.approx(0.0, abs=1e-7)  # every member gives the same preference
    assert float(var[1]) == pytest.approx(sum((p - mean) ** 2 for p in p1) / 3, abs=1e-6)


def test_queries_pick_the_pair_the_members_disagree_on_most():
    """Members r_k(s) = c_k * (s_0 + 100) with c = (-1, 0, 1): they disagree more the more the segments'
    summed s_0 differ. The candidate with the largest difference is asked first, then the others in order."""
    ens = RewardEnsemble(obs_dim=2, act_dim=1, num_members=3, hidden=(1,), activation="relu")
    with torch.no_grad():
        ens.weights[0].zero_()
        ens.weights[0][:, 0, 0] = 1.0  # hidden = relu(s_0 + 100)
        ens.biases[0].fill_(100.0)
        ens.weights[1][:, 0, 0] = torch.tensor([-1.0, 0.0, 1.0])
        ens.biases[1].zero_()
    length = 5
    diffs = [0.5, 3.0, 0.0, 1.0]  # difference of the segments' summed s_0, per candidate pair

    def segs(offsets: list[float]) -> Segments:
        obs = np.zeros((len(offsets), length, 2), np.float32)
        obs[:, :, 0] = np.asarray(offsets, np.float32)[:, None] / length
        return Segments(obs, np.zeros((len(offsets), length, 1), np.float32), np.zeros((len(offsets), length)))

    first, second = segs(diffs), segs([0.0] * len(diffs))
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    hand = [np.var([sig(-d), sig(0.0), sig(d)]) for d in diffs]
    assert select_pairs(ens, first, second, 1).tolist() == [1]
    assert select_pairs(ens, first, second, 4).tolist() == list(np.argsort(hand)[::-1]) == [1, 3, 0, 2]


# -- preference sources -------------------------------------------------------------------------------
def test_oracle_prefers_the_higher_true_return_and_ties_within_its_margin():
    first, second = _segments([5.0, -3.0, 1.0, 2.0]), _segments([1.0, 4.0, 1.0, 2.05])
    assert OracleSource().label(first, second).tolist() == [1.0, 0.0, 0.5, 0.0]
    assert OracleSource(tie_margin=0.1).label(first, second).tolist() == [1.0, 0.0, 0.5, 0.5]


def test_oracle_noise_replaces_answers_with_random_ones():
    n = 2000
    first, second = _segments([1.0] * n), _segments([0.0] * n)
    labels = OracleSource(noise=0.5, seed=3).label(first, second)
    assert set(np.unique(labels)) <= {0.0, 1.0}
    # A quarter are wrong: half the answers are random, half of those land on "2".
    assert np.mean(labels == 0.0) == pytest.approx(0.25, abs=0.04)
    with pytest.raises(ConfigError):
        OracleSource(noise=1.5)


def test_terminal_source_reads_1_2_and_equals_and_asks_again_on_anything_else():
    stdin = io.StringIO("2\nmaybe\n\n=\n 1 \n")
    stdout = io.StringIO()
    source = TerminalSource(stdin, stdout)
    labels = source.label(_segments([0.0, 0.0, 0.0]), _segments([0.0, 0.0, 0.0]))
    assert labels.tolist() == [0.0, 0.5, 1.0]
    shown = stdout.getvalue()
    assert shown.count("please type 1, 2 or =") == 2  # "maybe" and the empty line
    assert shown.count("which is better?") == 5
    assert "steps: 4" in shown and "observation:" in shown and "action:" in shown
    assert "return" not in shown.lower()  # the person judges behaviour, never the env's score


def test_terminal_source_at_end_of_input_is_an_error():
    with pytest.raises(ConfigError, match="end of its input"):
        TerminalSource(io.StringIO("x\n"), io.StringIO()).label(_segments([0.0]), _segments([0.0]))


def test_make_source_by_name():
    assert isinstance(make_source("oracle"), OracleSource)
    assert isinstance(make_source("terminal"), TerminalSource)
    with pytest.raises(ConfigError, match="unknown preference_source"):
        make_source("crowd")


# -- normalisation ------------------------------------------------------------------------------------
def test_output_normalizer_gives_zero_mean_and_the_chosen_std():
    rng = np.random.default_rng(0)
    raw = rng.normal(7.0, 3.0, 5000)
    norm = OutputNormalizer(scale=2.0)
    for chunk in np.split(raw, 10):  # running: batches folded in one by one
        norm.update(chunk)
    out = norm(raw)
    assert out.dtype == np.float32
    assert float(out.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(out.std()) == pytest.approx(2.0, rel=1e-3)
    np.testing.assert_allclose(out, (raw - raw.mean()) / raw.std() * 2.0, rtol=1e-4, atol=1e-4)
    norm.reset()
    np.testing.assert_allclose(norm(np.array([1.5])), [3.0], rtol=1e-3)  # fresh statistics: mean 0, std 1


# -- segments -----------------------------------------------------------------------------------------
def _feed(buf: SegmentBuffer, steps: int, copies: int, episode: int) -> None:
    """``copies`` env copies interleaved; obs = (copy, t within episode, episode index)."""
    t = np.zeros(copies, int)
    ep = np.arange(copies) * 1000
    for _ in range(steps):
        obs = np.stack([np.arange(copies), t, ep], 1).astype(np.float32)
        done = t + 1 >= episode
        nxt = np.stack([np.arange(copies), t + 1, ep], 1).astype(np.float32)
        buf.add(obs, np.zeros((copies, 1), np.float32), (10 * np.arange(copies) + t).astype(float), nxt, done)
        t = np.where(done, 0, t + 1)
        ep = np.where(done, ep + 1, ep)


def test_segments_follow_one_copy_and_never_cross_an_episode_end():
    buf = SegmentBuffer(1000, (3,), (1,))
    _feed(buf, 100, copies=3, episode=12)
    segs = buf.sample(500, 5, np.random.default_rng(0))
    assert segs is not None and segs.obs.shape == (500, 5, 3)
    assert (segs.obs[:, :, 0] == segs.obs[:, :1, 0]).all()  # one env copy per segment
    assert (segs.obs[:, :, 2] == segs.obs[:, :1, 2]).all()  # one episode per segment
    assert (np.diff(segs.obs[:, :, 1], axis=1) == 1).all()  # consecutive steps
    np.testing.assert_allclose(segs.true_reward, 10 * segs.obs[:, :, 0] + segs.obs[:, :, 1])
    assert buf.sample(1, 13, np.random.default_rng(0)) is None  # longer than an episode: none exists


def test_segments_whose_start_was_overwritten_are_not_drawn():
    buf = SegmentBuffer(20, (3,), (1,))
    _feed(buf, 30, copies=1, episode=1000)  # one long chain; only its last 20 steps are still held
    segs = buf.sample(200, 20, np.random.default_rng(0))
    assert segs is not None and (segs.obs[:, 0, 1] == 10).all()  # the only whole 20-step window: steps 10..29
    assert buf.sample(1, 21, np.random.default_rng(0)) is None


# -- the label schedule -------------------------------------------------------------------------------
def test_label_schedule_spends_the_budget_at_a_decreasing_rate():
    s = LabelSchedule(max_labels=1000, initial=100, every=1000, start=1000, horizon=50_000, tau=5000)
    assert s.target(999) == 0 and s.target(1000) == 100 and s.target(50_000) == 1000 and s.target(90_000) == 1000
    steps = np.arange(1000, 50_001, 1000)
    targets = np.array([s.target(int(t)) for t in steps])
    rates = np.diff(targets)
    assert (rates >= 0).all() and rates[0] > 4 * rates[-1]  # more labels early than late
    assert s.due(1000, 0, 0) == 100  # the first batch at once
    assert s.due(1500, 100, 1000) == 0  # then every 1000 steps
    assert s.due(2000, 100, 1000) == s.target(2000) - 100 > 0
