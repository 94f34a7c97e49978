"""The alphazero topology: deterministic in-process, batched across actors on concurrent backends, gate, resume."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import shoal
from shoal.agents.alphazero.config import AlphaZeroConfig
from shoal.backends.inprocess import InProcessBackend
from shoal.backends.threaded import ThreadedBackend
from shoal.config import to_dict
from shoal.errors import ConfigError
from shoal.settings import RunConfig
from shoal.topologies.alphazero import AlphaZeroProgram, AlphaZeroSettings, GameContext, LearnerNode, SelfPlayNode

SMALL = {"simulations": 8, "leaf_batch": 4, "games_per_actor": 4, "channels": 8, "blocks": 1, "value_hidden": 8,
         "batch_size": 32, "min_replay": 32, "buffer_size": 2000, "replay_ratio": 1.0}


def _ctx(game: str = "tictactoe", seed: int = 1, **agent) -> GameContext:
    return GameContext(to_dict(AlphaZeroConfig(**{**SMALL, **agent})), game, seed)


def _program(backend, n: int = 2, steps: int = 2000, game: str = "tictactoe", **agent) -> AlphaZeroProgram:
    return AlphaZeroProgram(_ctx(game, **agent), RunConfig(steps=steps, num_actors=n), backend,
                            AlphaZeroSettings(moves_per_call=32))


def _params(prog: AlphaZeroProgram) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in prog.network().state_dict().items()}


def test_inprocess_rounds_are_deterministic_and_train() -> None:
    runs = []
    for _ in range(2):
        prog = _program(InProcessBackend())
        try:
            reports = [prog.run_iteration() for _ in range(4)]
            runs.append((_params(prog), [r.env_steps for r in reports], [r.episode_returns for r in reports],
                         reports[-1].metrics))
        finally:
            prog.close()
    (p1, s1, o1, m1), (p2, s2, o2, m2) = runs
    assert s1 == s2 == [64, 64, 64, 64] and o1 == o2
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert m1["learner_updates"] > 0 and m1 == m2
    assert m1["evaluator_version"] > 0  # self-play moved on to learned versions
    init = _ctx().initial_network().state_dict()
    assert any(not torch.equal(init[k], p1[k]) for k in p1)


def test_actors_write_augmented_games_into_the_learners_table() -> None:
    backend = InProcessBackend()
    prog = _program(backend, n=1, simulations=4)
    try:
        rep = prog.run_iteration()
        learner = next(n for n in backend.nodes if isinstance(n, LearnerNode))
        positions = sum(rep.episode_lengths)
        assert learner.learner.positions == positions and len(learner.learner.table) == 8 * positions
        assert rep.metrics["actor_leaves_per_call"] > 1  # the games' leaves share network calls
    finally:
        prog.close()


def test_threaded_actors_share_batched_leaf_evaluations() -> None:
    prog = _program(ThreadedBackend(), n=3, steps=10_000)
    prog.call_seconds = 0.3
    try:
        per_actor = AlphaZeroConfig(**SMALL).games_per_actor * AlphaZeroConfig(**SMALL).leaf_batch
        deadline, reports = time.monotonic() + 60, []
        while time.monotonic() < deadline and not (any("inference_requests_mean" in r.metrics for r in reports[3:])
                                                   and sum(r.env_steps for r in reports) > 0):
            reports.append(prog.run_iteration())
        m = next(r.metrics for r in reversed(reports) if "inference_requests_mean" in r.metrics)
        assert m["inference_requests_mean"] > 1.0           # requests of several actors in one call
        assert m["inference_batch_mean"] <= 3 * per_actor
        assert sum(r.env_steps for r in reports) > 0
    finally:
        prog.close()


def test_gate_keeps_the_best_network_until_a_candidate_wins() -> None:
    node = LearnerNode(_ctx(gate=True, gate_games=4, gate_simulations=4), _Vars())
    # A candidate equal to the best network plays it to exactly 0.5 (the same deterministic player on each side).
    res = node._gate()
    assert res == {"gate_score": 0.5, "gate_accepted": 0.0} and node.best_version == 0
    node.learner.version = 7
    with torch.no_grad():
        next(node.net.parameters()).add_(1.0)
    node.cfg.gate_threshold = 1.0 + 1e-9  # out of reach: the candidate stays out whatever it scores
    score = node._gate()["gate_score"]
    assert node.best_version == 0
    assert not all(torch.equal(a, b) for a, b in zip(node.best.state_dict().values(), node.net.state_dict().values()))
    node.cfg.gate_threshold = score  # the same games again (deterministic players), now at the threshold: accepted
    assert node._gate() == {"gate_score": score, "gate_accepted": 1.0} and node.best_version == 7
    assert all(torch.equal(a, b) for a, b in zip(node.best.state_dict().values(), node.net.state_dict().values()))
    assert [r["accepted"] for r in node.gate_results] == [0.0, 0.0, 1.0]


def test_gated_self_play_uses_the_best_network() -> None:
    backend = InProcessBackend()
    prog = _program(backend, n=1, gate=True, gate_every=2, gate_games=2, gate_simulations=2, gate_threshold=1.0)
    try:
        for _ in range(3):
            rep = prog.run_iteration()
        learner = next(n for n in backend.nodes if isinstance(n, LearnerNode))
        assert learner.learner.updates >= 2 and learner.gate_results
        # threshold 1.0: a candidate must win every game; the published version is the best network's
        assert rep.metrics["evaluator_version"] == learner.best_version
        assert learner.get_variables()[0] == learner.best_version
    finally:
        prog.close()


class _Vars:
    """A stand-in variable server handle (records publishes)."""

    def __init__(self) -> None:
        from shoal.services.variables import VariableServer

        self.server = VariableServer()

    def call(self, method: str, *args, **kwargs):
        from shoal.backends.base import Ready

        return Ready(getattr(self.server, method)(*args, **kwargs))


def test_train_resume_and_run_directory(run_dir) -> None:
    over = {**SMALL, "eval_games": 2, "baseline_simulations": 20, "topology.moves_per_call": 32}
    r = shoal.train("alphazero", env="tictactoe", steps=128, run_dir=run_dir, overrides=over)
    for name in ("config.yaml", "run.json", "metrics.csv", "eval.json"):
        assert (run_dir / name).exists()
    assert r.env_steps == 128 and set(r.eval["baselines"]) == {"solver20", "random", "minimax"}
    assert r.eval["engine_simulations"] == 25  # the tictactoe default of shoal/configs/alphazero.yaml
    r2 = shoal.train(resume=run_dir, steps=256, overrides={"eval_games": 2})
    assert r2.env_steps == 256
    import csv

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert float(rows[-1]["learner_updates"]) > float(next(x for x in rows if x["env_steps"] == "128")["learner_updates"])
    with pytest.raises(ConfigError, match="board games"):
        shoal.train("alphazero", env="CartPole-v1", steps=10, run_dir=run_dir.parent / "other")
    assert not (run_dir.parent / "other").exists()


def test_selfplay_node_reports_positions() -> None:
    class _Direct:
        def __init__(self, fn):
            self.fn = fn

        def call(self, method, *args):
            from shoal.backends.base import Ready

            return Ready(self.fn(*args))

    from shoal.agents.alphazero.mcts import uniform_evaluator

    got = []
    node = SelfPlayNode(_ctx(), 0, 5, _Direct(lambda _i, p, m: uniform_evaluator(p, m)),
                        _Direct(lambda items, n: got.append((len(items["z"]), n))))
    rep = node.run(40)
    assert rep.env_steps == 40 and got and got[0][0] == 8 * got[0][1] == 8 * sum(rep.episode_lengths)
    assert set(np.unique(rep.episode_returns)) <= {-1.0, 0.0, 1.0}


@pytest.mark.ray
def test_ray_backend_runs_self_play_with_four_actors() -> None:
    from shoal.backends.ray import RayBackend

    prog = _program(RayBackend(), n=4, steps=400)
    prog.call_seconds = 0.5
    try:
        steps, deadline, reports = 0, time.monotonic() + 90, []
        while steps < 200 and time.monotonic() < deadline:
            reports.append(prog.run_iteration())
            steps += reports[-1].env_steps
        assert steps >= 200
        assert any(r.metrics.get("learner_updates", 0) > 0 for r in reports)
    finally:
        prog.close()


@pytest.mark.parametrize("game", ["connect4", "gomoku9"])
def test_every_game_self_plays_and_trains(game: str) -> None:
    backend = InProcessBackend()
    prog = AlphaZeroProgram(_ctx(game, simulations=4, games_per_actor=2, min_replay=16, batch_size=16), RunConfig(steps=10_000),
                            backend, AlphaZeroSettings(moves_per_call=48 if game == "connect4" else 100))
    try:
        reports = [prog.run_iteration() for _ in range(2)]
        assert sum(len(r.episode_returns) for r in reports) >= 1
        assert reports[-1].metrics["learner_updates"] > 0
    finally:
        prog.close()


def test_other_topologies_and_devices_are_refused(run_dir) -> None:
    with pytest.raises(ConfigError, match="CPU only"):
        shoal.train("alphazero", env="tictactoe", steps=8, run_dir=run_dir, overrides={"device": "cuda"})
    with pytest.raises(ConfigError, match="alphazero topology"):
        shoal.train("alphazero", env="tictactoe", steps=8, run_dir=run_dir, topology="local")
    with pytest.raises(ConfigError, match="board games"):
        shoal.train("ppo", env="CartPole-v1", steps=8, run_dir=run_dir, topology="alphazero")
    assert not run_dir.exists()
