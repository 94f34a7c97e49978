"""``shoal play --engine``: the line protocol, driven through a subprocess."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch

import shoal
from shoal.agents.alphazero.networks import masked_priors
from shoal.envs.games import make_game
from shoal.run.play import EngineProcess, engine, human, load_player

SMALL = {"simulations": 4, "leaf_batch": 2, "games_per_actor": 2, "channels": 8, "blocks": 1, "value_hidden": 8,
         "batch_size": 16, "min_replay": 16, "eval_games": 0, "topology.moves_per_call": 16}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("az") / "run"
    shoal.train("alphazero", env="tictactoe", steps=48, run_dir=d, overrides=SMALL)
    return d


def test_engine_protocol_through_a_subprocess(trained) -> None:
    histories = ["", "4", "0 1", "4", "4 4", "0 3 1 4 2", "x y"]
    proc = subprocess.run([sys.executable, "-m", "shoal.cli", "play", "tictactoe", "--run-dir", str(trained), "--engine"],
                          input="\n".join(histories) + "\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    answers = proc.stdout.splitlines()
    assert len(answers) == len(histories)
    for h, a in zip(histories[:4], answers[:4]):
        g = make_game("tictactoe").play_all(int(x) for x in h.split())
        assert g.is_legal(int(a))
    assert answers[1] == answers[3]  # deterministic: the same history gets the same move
    assert answers[4].startswith("error:") and "not legal" in answers[4]
    assert answers[5].startswith("error:") and "over" in answers[5]
    assert answers[6].startswith("error:")


def test_one_simulation_plays_the_policy_heads_choice(trained) -> None:
    builder, player, sims = load_player(trained, "tictactoe", 1)
    assert sims == 1
    g = make_game("tictactoe").play_all([4, 0])
    net = player.evaluate.net
    with torch.no_grad():
        net.eval()
        logits, _ = net(torch.as_tensor(g.planes()[None]))
    p = masked_priors(logits, torch.as_tensor(g.legal_mask()[None]))[0].numpy()
    out = io.StringIO()
    engine(builder, player, io.StringIO("4 0\n"), out)
    assert int(out.getvalue()) == int(np.argmax(p))


def test_engine_process_player_and_default_search_size(trained) -> None:
    eng = EngineProcess("tictactoe", trained, timeout=60)
    try:
        g = make_game("tictactoe")
        while not g.is_terminal():
            g.play(eng.select_action(g) if g.to_play == 1 else int(g.legal_actions()[0]))
    finally:
        assert eng.close() == 0
    _, player, sims = load_player(trained, "tictactoe", None)
    assert sims == player.simulations == 25  # the engine size recorded in the run's config


def test_human_game_refuses_illegal_moves(trained) -> None:
    builder, player, _ = load_player(trained, "tictactoe", 2)
    out = io.StringIO()
    human(builder, player, "second", io.StringIO("9\nabc\n" + "\n".join(str(i) for i in range(9)) + "\n"), out)
    text = out.getvalue()
    assert "You play O (second)" in text and "engine plays" in text
    assert "not legal" in text and "'abc' is not a move number" in text
    assert any(end in text for end in ("draw", "you win", "the engine wins"))


def test_play_errors_name_the_problem(trained, capsys) -> None:
    from shoal.cli import main

    assert main(["play", "connect4", "--run-dir", str(trained), "--engine"]) == 2
    assert "trained on 'tictactoe'" in capsys.readouterr().err
    assert main(["play", "tictactoe", "--run-dir", str(trained.parent / "nothing")]) == 2
    assert main(["train", "ppo", "--env", "connect4", "--steps", "8"]) == 2
    assert "only alphazero" in capsys.readouterr().err


def test_shoal_eval_plays_the_baselines(trained, capsys) -> None:
    from shoal.cli import main

    assert main(["eval", str(trained), "--episodes", "2"]) == 0
    assert "over 2 episodes (checkpoint at 48 env steps)" in capsys.readouterr().out
