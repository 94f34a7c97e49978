"""AlphaZero's networks (res/conv torso, dual/separate), its loss, the learner's pacing and policy pretraining."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shoal.agents.alphazero.config import AlphaZeroConfig
from shoal.agents.alphazero.learner import AlphaZeroLearner
from shoal.agents.alphazero.loss import alphazero_loss
from shoal.agents.alphazero.minimax import MinimaxPlayer
from shoal.agents.alphazero.networks import NetworkEvaluator, make_network, masked_priors
from shoal.agents.alphazero.player import play_game
from shoal.agents.alphazero.pretrain import policy_dataset, pretrain_policy, read_games
from shoal.envs.games import game_class, make_game
from shoal.errors import ConfigError


@pytest.mark.parametrize("torso", ["res", "conv"])
@pytest.mark.parametrize("dual", [True, False])
@pytest.mark.parametrize("game", ["tictactoe", "connect4", "gomoku9"])
def test_network_shapes(torso: str, dual: bool, game: str) -> None:
    g = game_class(game)
    net = make_network(AlphaZeroConfig(torso=torso, dual=dual, channels=8, blocks=1), g.num_planes, g.rows, g.cols,
                       g.num_actions)
    logits, v = net(torch.zeros(5, g.num_planes, g.rows, g.cols))
    assert logits.shape == (5, g.num_actions) and v.shape == (5,) and (v.abs() <= 1).all()
    assert (net.value_torso is None) == dual
    has_res = any(type(m).__name__ == "ResBlock" for m in net.modules())
    assert has_res == (torso == "res")


def test_separate_networks_share_nothing() -> None:
    g = game_class("tictactoe")
    net = make_network(AlphaZeroConfig(dual=False, channels=8, blocks=1), g.num_planes, 3, 3, 9)
    pol = {id(p) for p in net.policy_parameters()}
    val = {id(p) for p in list(net.value_torso.parameters()) + list(net.value_head.parameters())}
    assert pol.isdisjoint(val) and len(pol) + len(val) == len(list(net.parameters()))
    x = torch.randn(3, 3, 3, 3)
    net.eval()
    before = net(x)[0].clone()
    with torch.no_grad():
        for p in val:
            next(q for q in net.parameters() if id(q) == p).add_(0.5)
    assert torch.equal(net(x)[0], before)  # the value network does not touch the policy


def test_masked_priors_and_evaluator() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    masks = torch.tensor([[True, False, True], [False, True, False]])
    p = masked_priors(logits, masks)
    e1, e3 = math.exp(1), math.exp(3)
    assert torch.allclose(p[0], torch.tensor([e1 / (e1 + e3), 0.0, e3 / (e1 + e3)]))
    assert torch.equal(p[1], torch.tensor([0.0, 1.0, 0.0]))
    g = make_game("tictactoe").play_all([4])
    net = make_network(AlphaZeroConfig(channels=8, blocks=1), 3, 3, 3, 9)
    priors, values = NetworkEvaluator(net)(g.planes()[None], g.legal_mask()[None])
    assert priors[0, 4] == 0 and priors.sum() == pytest.approx(1.0, abs=1e-6) and values.shape == (1,)


def test_loss_against_hand_computed_values() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [0.25, 0.75]
    pi = torch.tensor([[0.5, 0.5]])
    values, z = torch.tensor([0.2]), torch.tensor([1.0])
    w = torch.tensor([1.0, 2.0])
    loss, m = alphazero_loss(logits, values, pi, z, [w], l2=0.1, value_coef=2.0)
    ce = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert m["policy_loss"].item() == pytest.approx(ce)
    assert m["value_loss"].item() == pytest.approx(0.64)
    assert m["l2_loss"].item() == pytest.approx(5.0)
    assert loss.item() == pytest.approx(ce + 2 * 0.64 + 0.1 * 5.0)


def test_learner_pacing_and_step() -> None:
    cfg = AlphaZeroConfig(batch_size=8, min_replay=16, buffer_size=100, replay_ratio=2.0, channels=8, blocks=1)
    net = make_network(cfg, 3, 3, 3, 9)
    lr = AlphaZeroLearner(net, cfg, seed=0)
    rng = np.random.default_rng(0)

    def items(n: int) -> dict[str, np.ndarray]:
        pi = rng.random((n, 9)).astype(np.float32)
        return {"planes": rng.random((n, 3, 3, 3)).astype(np.float32), "pi": pi / pi.sum(1, keepdims=True),
                "z": rng.choice([-1.0, 0.0, 1.0], n).astype(np.float32)}

    lr.insert(items(8), positions=1)
    assert lr.updates_due() == 0  # below min_replay
    lr.insert(items(16), positions=3)
    assert lr.updates_due() == int(4 * 2.0 / 8) == 1
    lr.insert(items(160), positions=20)  # more than the capacity: the newest 100 are kept
    assert len(lr.table) == 100 and lr.updates_due() == int(24 * 2 / 8) == 6
    before = [p.clone() for p in net.parameters()]
    m = lr.step()
    assert set(m) == {"loss", "policy_loss", "value_loss", "l2_loss", "nonfinite_updates"} and lr.updates == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    state = lr.state()
    other = AlphaZeroLearner(make_network(cfg, 3, 3, 3, 9), cfg, seed=0)
    other.load_state(state)
    assert other.updates == 1 and other.positions == 24 and len(other.table) == 100


def test_pretraining_learns_the_dataset_moves(tmp_path) -> None:
    mm = MinimaxPlayer(seed=0)
    games = [play_game(lambda: make_game("tictactoe"), mm, mm).history for _ in range(30)]
    f = tmp_path / "games.txt"
    f.write_text("\n".join(" ".join(map(str, h)) for h in games) + "\n")
    assert read_games(f) == games
    data = policy_dataset(lambda: make_game("tictactoe"), games)
    assert len(data["pi"]) == 8 * sum(len(h) for h in games) and (data["pi"].sum(1) == 1).all()
    torch.manual_seed(0)
    net = make_network(AlphaZeroConfig(channels=16, blocks=1, dual=False), 3, 3, 3, 9)
    value_before = [p.clone() for p in net.value_head.parameters()]
    m = pretrain_policy(net, data, epochs=15, batch_size=64, lr=3e-3, seed=0)
    assert m["pretrain_loss_last"] < 0.6 * m["pretrain_loss_first"]
    assert m["pretrain_accuracy_last"] > 0.5
    assert all(torch.equal(a, b) for a, b in zip(value_before, net.value_head.parameters()))  # only the policy trains
    bad = tmp_path / "bad.txt"
    bad.write_text("0 0\n")
    with pytest.raises(Exception, match="illegal move 0"):
        policy_dataset(lambda: make_game("tictactoe"), read_games(bad))
    bad.write_text("a b\n")
    with pytest.raises(ConfigError, match="space-separated"):
        read_games(bad)


def test_get_variables_is_a_snapshot_that_later_steps_leave_alone() -> None:
    cfg = AlphaZeroConfig(batch_size=8, min_replay=8, buffer_size=100, channels=8, blocks=1)
    net = make_network(cfg, 3, 3, 3, 9)
    lr = AlphaZeroLearner(net, cfg, seed=0)
    rng = np.random.default_rng(1)
    pi = rng.random((16, 9)).astype(np.float32)
    lr.insert({"planes": rng.random((16, 3, 3, 3)).astype(np.float32), "pi": pi / pi.sum(1, keepdims=True),
               "z": np.ones(16, np.float32)}, positions=16)
    version, snap = lr.get_variables()
    expected = {k: v.clone() for k, v in snap.items()}
    lr.step()
    assert lr.get_variables()[0] == version + 1
    assert any(not torch.equal(net.state_dict()[k], expected[k]) for k in expected)
    assert all(torch.equal(snap[k], v) for k, v in expected.items())
