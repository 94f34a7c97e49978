"""Dyna-Q and Dyna-Q+: planning updates and bonuses against hand-computed values, the model, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import shoal
from shoal.agents.tabular.config import DynaQConfig
from shoal.agents.tabular.dyna import DynaQLearner, planning_updates
from shoal.agents.tabular.model import TabularModel
from shoal.agents.tabular.networks import QTable
from shoal.agents.tabular.update import q_learning_update
from shoal.errors import ConfigError
from shoal.io.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint


def _batch(*transitions: tuple[int, int, float, int, bool]) -> dict[str, np.ndarray]:
    """Transitions ``(s, a, r, s', terminated)`` as the tabular actor hands them over, ``[T, 1]``."""
    s, a, r, s2, term = (np.array([[t[i]] for t in transitions]) for i in range(5))
    return {"s": s, "a": a, "r": r.astype(np.float64), "s2": s2, "a2": np.zeros_like(a), "terminated": term.astype(bool),
            "truncated": np.zeros_like(term, bool), "first": np.zeros_like(term, bool)}


def _learner(S: int, A: int, seed: int = 0, **cfg) -> DynaQLearner:
    config = DynaQConfig(**cfg)
    return DynaQLearner(QTable(S, A, config.q_init), config, total_steps=1000, seed=seed)


def test_planning_updates_match_hand_computed_values() -> None:
    # Two non-terminal states and a terminal one: (0, a0) -> 1 with r = 0, (1, a0) -> terminal with r = 1.
    model = TabularModel(3, 2)
    model.observe(0, 0, 0.0, 1, False, 1)
    model.observe(1, 0, 1.0, 2, True, 2)
    q = np.zeros((3, 2))
    pairs = np.array([0 * 2 + 0, 1 * 2 + 0, 0 * 2 + 0, 1 * 2 + 0])
    total = planning_updates(q, model, pairs, alpha=0.5, gamma=0.9)
    # 1) Q(0,0) += 0.5 (0 + 0.9 * 0 - 0) = 0     2) Q(1,0) += 0.5 (1 - 0) = 0.5
    # 3) Q(0,0) += 0.5 (0 + 0.9 * 0.5 - 0) = 0.225   4) Q(1,0) += 0.5 (1 - 0.5) = 0.75
    assert q[0, 0] == pytest.approx(0.225) and q[1, 0] == pytest.approx(0.75)
    assert q[0, 1] == q[1, 1] == 0.0 and (q[2] == 0).all()
    assert total == pytest.approx(0.0 + 1.0 + 0.45 + 0.5)


def test_planning_updates_equal_q_learning_updates_in_a_slow_loop() -> None:
    rng = np.random.default_rng(3)
    S, A = 7, 3
    model = TabularModel(S, A)
    for step in range(1, 40):
        model.observe(int(rng.integers(S)), int(rng.integers(A)), float(rng.normal()), int(rng.integers(S)),
                      bool(rng.random() < 0.2), step)
    for untried in (False, True):
        pairs = model.sample(rng, 500, untried=untried)
        q = rng.normal(size=(S, A))
        ref = q.copy()
        total = planning_updates(q, model, pairs, alpha=0.3, gamma=0.9, kappa=0.01, now=60)
        ref_total = 0.0
        for i in pairs.tolist():
            s, a = divmod(i, A)
            r = model.reward[s, a] + 0.01 * math.sqrt(60 - model.last_tried[s, a])
            ref_total += abs(q_learning_update(ref, s, a, r, int(model.next_state[s, a]), bool(model.terminated[s, a]), 0.3, 0.9))
        np.testing.assert_allclose(q, ref, rtol=0, atol=1e-12)
        assert total == pytest.approx(ref_total)


def test_the_model_stores_what_was_observed() -> None:
    m = TabularModel(4, 3)
    m.observe(2, 1, -1.0, 3, False, 1)
    m.observe(3, 0, 5.0, 0, True, 2)
    m.observe(2, 1, 0.5, 0, False, 3)  # deterministic: the newest outcome replaces the old one
    m.observe(2, 2, 0.0, 1, False, 4)
    assert (m.reward[2, 1], m.next_state[2, 1], m.terminated[2, 1], m.last_tried[2, 1]) == (0.5, 0, False, 3)
    assert (m.reward[3, 0], m.next_state[3, 0], m.terminated[3, 0], m.last_tried[3, 0]) == (5.0, 0, True, 2)
    assert (m.reward[2, 2], m.next_state[2, 2], m.last_tried[2, 2]) == (0.0, 1, 4)
    assert m.tried.sum() == 3 and m.tried[2, 1] and m.tried[3, 0] and m.tried[2, 2]
    assert m.num_pairs == 3 and list(m.num_tried) == [0, 0, 2, 1]
    assert list(m.actions[2, :2]) == [1, 2] and m.actions[3, 0] == 0  # each state's tried actions, in the order first tried
    assert list(m.states[:m.num_states]) == [2, 3] and list(np.flatnonzero(m.visited)) == [2, 3]
    # Untried actions of visited states: back to the same state, reward 0, last tried at the first visit.
    assert (m.next_state[2, 0], m.reward[2, 0], m.terminated[2, 0], m.last_tried[2, 0]) == (2, 0.0, False, 1)
    assert (m.next_state[3, 2], m.reward[3, 2], m.last_tried[3, 2]) == (3, 0.0, 2)
    assert not m.visited[0] and not m.tried[0].any()


def _chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's statistic of ``counts`` against the cell probabilities ``probs``."""
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum())


#: Upper 0.1% points of the chi-square distribution by degrees of freedom (standard tables).
CHI2_999 = {2: 13.816, 5: 20.515, 11: 31.264}


def test_sampling_draws_a_state_uniformly_then_one_of_its_tried_actions() -> None:
    # Figure 8.2 (f): S is a random previously observed state, A a random action previously taken in S.
    # Two actions tried in state 0, one in state 3: the pairs come up 1/4, 1/4, 1/2 (not 1/3 each).
    m = TabularModel(5, 2)
    for step, (s, a) in enumerate([(0, 0), (0, 1), (3, 1)], start=1):
        m.observe(s, a, 0.0, 1, False, step)
    n = 60_000
    counts = np.bincount(m.sample(np.random.default_rng(0), n), minlength=10)
    assert set(np.flatnonzero(counts)) == {0, 1, 7}
    assert _chi_square(counts[[0, 1, 7]], np.array([1 / 4, 1 / 4, 1 / 2])) < CHI2_999[2]
    assert _chi_square(counts[[0, 1, 7]], np.full(3, 1 / 3)) > 100 * CHI2_999[2]  # uniform over pairs is far off
    # One, two and three actions tried in three states: 1/3 for the first pair, 1/6 and 1/9 for the others.
    m = TabularModel(6, 4)
    for step, (s, a) in enumerate([(0, 0), (2, 3), (2, 1), (4, 0), (4, 1), (4, 2), (2, 3)], start=1):
        m.observe(s, a, 0.0, 1, False, step)
    counts = np.bincount(m.sample(np.random.default_rng(1), n), minlength=24)
    cells = [0 * 4 + 0, 2 * 4 + 1, 2 * 4 + 3, 4 * 4 + 0, 4 * 4 + 1, 4 * 4 + 2]
    assert set(np.flatnonzero(counts)) == set(cells)
    assert _chi_square(counts[cells], np.array([1 / 3, 1 / 6, 1 / 6, 1 / 9, 1 / 9, 1 / 9])) < CHI2_999[5]
    assert _chi_square(counts[cells], np.full(6, 1 / 6)) > 100 * CHI2_999[5]
    assert len(TabularModel(5, 2).sample(np.random.default_rng(0), 10)) == 0  # nothing observed yet
    first, again = (m.sample(np.random.default_rng(7), 50) for _ in range(2))
    assert np.array_equal(first, again)  # a seeded generator draws the same pairs


def test_dyna_q_plus_sampling_draws_a_state_uniformly_then_any_of_its_actions() -> None:
    # The book's footnote: untried actions of visited states are planned too; every state is as likely.
    m = TabularModel(6, 4)
    for step, (s, a) in enumerate([(0, 0), (2, 3), (2, 1), (4, 0), (4, 1), (4, 2)], start=1):
        m.observe(s, a, 0.0, 1, False, step)
    n = 60_000
    counts = np.bincount(m.sample(np.random.default_rng(2), n, untried=True), minlength=24)
    cells = [s * 4 + a for s in (0, 2, 4) for a in range(4)]
    assert set(np.flatnonzero(counts)) == set(cells)  # (0, 3), say, was never tried but state 0 was visited
    assert _chi_square(counts[cells], np.full(12, 1 / 12)) < CHI2_999[11]


def test_learner_plans_after_each_real_step() -> None:
    # One terminal transition, alpha = 0.5, 3 planning steps: every planned update is on the same pair,
    # so Q(0, 1) = 1 - (1 - alpha)^(1 + 3) = 0.9375 (1 real update, then 3 planned ones with target 1).
    learner = _learner(2, 2, alpha=0.5, gamma=0.9, planning_steps=3)
    metrics = learner.step(_batch((0, 1, 1.0, 1, True)))
    assert learner.q[0, 1] == pytest.approx(1 - 0.5 ** 4)
    assert learner.env_steps == 1 and learner.version == 1 and metrics["model_pairs"] == 1.0
    assert metrics["planning_td_error_abs"] == pytest.approx((0.5 + 0.25 + 0.125) / 3)
    # Without planning it is one Q-learning update.
    plain = _learner(2, 2, alpha=0.5, gamma=0.9, planning_steps=0)
    plain.step(_batch((0, 1, 1.0, 1, True)))
    assert plain.q[0, 1] == pytest.approx(0.5)


def test_dyna_q_plus_bonus_is_kappa_sqrt_tau() -> None:
    model = TabularModel(3, 2)
    model.observe(0, 0, 0.5, 2, True, 2)  # tried at step 2, terminal
    q = np.zeros((3, 2))
    # alpha = 1: Q becomes the target. At step 11, tau = 9: Q(0,0) = 0.5 + 0.01 * sqrt(9) = 0.53.
    planning_updates(q, model, np.array([0]), alpha=1.0, gamma=0.9, kappa=0.01, now=11)
    assert q[0, 0] == pytest.approx(0.53)
    # (0, 1) was never tried: it leads back to state 0 with r = 0, its tau counted from the first visit (step 2).
    # Q(0,1) = 0 + 0.01 * sqrt(25 - 2) + 0.9 * max(Q(0,0) = 0.53, Q(0,1) = 0).
    planning_updates(q, model, np.array([1]), alpha=1.0, gamma=0.9, kappa=0.01, now=25)
    assert q[0, 1] == pytest.approx(0.01 * math.sqrt(23) + 0.9 * 0.53)
    # No bonus at tau = 0.
    planning_updates(q, model, np.array([0]), alpha=1.0, gamma=0.9, kappa=0.01, now=2)
    assert q[0, 0] == pytest.approx(0.5)


def test_dyna_q_plus_learner_plans_untried_actions_with_the_bonus() -> None:
    # gamma = 0 and alpha = 1: a planned Q(s, a) is exactly the planned reward r + kappa sqrt(tau).
    steps = _batch((0, 0, 0.0, 1, False), (1, 0, 0.0, 0, False))  # state 0 first seen at step 1, state 1 at step 2
    plus = _learner(2, 2, seed=1, alpha=1.0, gamma=0.0, planning_steps=200, plus=True, kappa=0.5)
    plus.step(steps)
    # After step 2 (now = 2): state 0's pairs have tau = 1, state 1's tau = 0.
    np.testing.assert_allclose(plus.q, [[0.5, 0.5], [0.0, 0.0]])


def test_dyna_q_learner_does_not_plan_untried_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    # q_init = 1, alpha = 1, gamma = 0.5, no bonus. Step 1, (0, 0) -> 1: Q(0,0) = 0 + 0.5 max Q(1) = 0.5, and
    # planning it again gives 0.5. Step 2, (1, 0) -> 0: Q(1,0) = 0.5 max Q(0) = 0.5 max(0.5, 1) = 0.5, as planning
    # both pairs keeps them. An untried action planned as a self-loop would drop to 0.5 max Q(s) = 0.5, not stay at 1.
    drawn: list[np.ndarray] = []
    real_sample = TabularModel.sample

    def spy(self: TabularModel, rng: np.random.Generator, n: int, untried: bool = False) -> np.ndarray:
        drawn.append(real_sample(self, rng, n, untried))
        return drawn[-1]

    monkeypatch.setattr(TabularModel, "sample", spy)
    plain = _learner(2, 2, seed=1, alpha=1.0, gamma=0.5, planning_steps=200, plus=False, q_init=1.0)
    plain.step(_batch((0, 0, 0.0, 1, False), (1, 0, 0.0, 0, False)))
    np.testing.assert_allclose(plain.q, [[0.5, 1.0], [0.5, 1.0]])
    assert len(drawn) == 2 and set(np.concatenate(drawn).tolist()) == {0 * 2 + 0, 1 * 2 + 0}  # the tried pairs only
    # The same steps with Dyna-Q+'s sampling (and no bonus) do plan the untried actions: the check above can fail.
    plus = _learner(2, 2, seed=1, alpha=1.0, gamma=0.5, planning_steps=200, plus=True, kappa=0.0, q_init=1.0)
    plus.step(_batch((0, 0, 0.0, 1, False), (1, 0, 0.0, 0, False)))
    assert plus.q[0, 1] < 1.0 and plus.q[1, 1] < 1.0


def test_dyna_q_refuses_several_blocking_maze_copies() -> None:
    from shoal.agents.tabular.dyna import DynaQBuilder
    from shoal.envs.make import env_spec

    spec = env_spec("shoal/BlockingMaze-v0")
    with pytest.raises(ConfigError, match="num_envs=1"):
        DynaQBuilder(DynaQConfig(num_envs=2), spec)
    builder = DynaQBuilder(DynaQConfig(), spec)
    with pytest.raises(ConfigError, match="num_actors=1"):
        builder.make_actor(builder.make_networks(), 1, 0, 2)
    builder.make_actor(builder.make_networks(), 1, 0, 1)
    DynaQBuilder(DynaQConfig(num_envs=2), env_spec("shoal/BlockingMazeMoved-v0"))  # its wall never moves: fine


def test_config_checks_its_fields() -> None:
    assert DynaQConfig().planning_steps == 50 and DynaQConfig().update == "q_learning"
    with pytest.raises(ConfigError, match="planning_steps"):
        DynaQConfig(planning_steps=-1)
    with pytest.raises(ConfigError, match="kappa"):
        DynaQConfig(kappa=-0.1)


def test_learner_state_round_trips_through_a_checkpoint_and_continues_identically(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def batch() -> dict[str, np.ndarray]:
        return _batch(*[(int(rng.integers(6)), int(rng.integers(3)), float(rng.normal()), int(rng.integers(6)),
                         bool(rng.random() < 0.1)) for _ in range(5)])

    cfg = {"alpha": 0.2, "gamma": 0.9, "planning_steps": 7, "plus": True, "kappa": 0.01}
    a = _learner(6, 3, seed=5, **cfg)
    for _ in range(4):
        a.step(batch())
    tree, _ = load_checkpoint(save_checkpoint(tmp_path / "ckpt-000000000020", {"learner": a.state()}))
    assert isinstance(tree["learner"]["model"]["reward"], np.ndarray)  # arrays live in the safetensors file
    b = _learner(6, 3, seed=99, **cfg)  # another seed: everything must come from the checkpoint
    b.load_state(tree["learner"])
    assert np.array_equal(b.q, a.q) and b.env_steps == a.env_steps == 20 and b.model.num_pairs == a.model.num_pairs
    for _ in range(3):
        x = batch()
        a.step(x)
        b.step(x)
    assert np.array_equal(a.q, b.q) and np.array_equal(a.model.last_tried, b.model.last_tried)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


def test_a_resumed_run_plans_from_the_checkpointed_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "run"
    shoal.train("dyna_q", "CliffWalking-v1", steps=150, seed=0, run_dir=d, quiet=True, tensorboard=False,
                overrides={"eval_episodes": 1, "eval_max_steps": 50, "planning_steps": 5})
    saved, _ = load_checkpoint(list_checkpoints(d / "checkpoints")[-1])
    seen: list[DynaQLearner] = []
    real_step = DynaQLearner.step

    def spy(self: DynaQLearner, data=None):
        if not seen:
            seen.append(self)
            learner = saved["program"]["learner"]
            assert np.array_equal(self.q, learner["networks"]["q"].numpy()) and self.env_steps == learner["env_steps"] == 150
            for k, v in learner["model"].items():
                assert np.array_equal(getattr(self.model, k), v), k
            assert self.rng.bit_generator.state == learner["rng"]
        return real_step(self, data)

    monkeypatch.setattr(DynaQLearner, "step", spy)
    second = shoal.train(resume=d, steps=300, quiet=True, tensorboard=False)
    assert second.env_steps == 300 and seen
    end, _ = load_checkpoint(list_checkpoints(d / "checkpoints")[-1])
    assert end["program"]["learner"]["env_steps"] == 300
    assert end["program"]["learner"]["model"]["last_tried"].max() > 150  # the model went on learning
    assert isinstance(end["program"]["learner"]["networks"]["q"], torch.Tensor)


def test_the_blocking_maze_benchmark_moves_the_wall_at_change_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "dyna_blocking_maze.py"
    spec = importlib.util.spec_from_file_location("dyna_blocking_maze", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    calls: list[dict] = []
    real_train = shoal.train

    def spy(algo, env, **kw):
        calls.append({"env": env, **kw})
        return real_train(algo, env, **kw)

    monkeypatch.setattr(shoal, "train", spy)
    x, ys = bench.cumulative_rewards(True, 1, 60, 20, tmp_path, change_at=25)
    assert x[0] == 0 and x[-1] == 60 and ys.shape == (1, len(x)) and (np.diff(ys[0]) >= 0).all()
    made = calls[0]["env"]()
    try:
        assert made.unwrapped.change_at == 25  # the env's wall, not only the figure's line
    finally:
        made.close()
    settings = calls[0]["overrides"]  # the shipped BlockingMaze-v0 settings, which an env factory does not get by itself
    assert (settings["alpha"], settings["gamma"], settings["epsilon"], settings["planning_steps"], settings["kappa"]) == \
        (1.0, 0.95, 0.1, 10, 1e-4)
    assert settings["plus"] is True and settings["eval_episodes"] == 0


def test_loading_a_q_table_from_a_run_without_one_names_dyna_q_among_the_tabular_methods(tmp_path: Path) -> None:
    from shoal.agents.tabular.render import load_q_table
    from shoal.errors import CheckpointError

    save_checkpoint(tmp_path / "checkpoints" / "ckpt-000000000010", {"program": {"learner": {"theta": np.zeros(3)}}})
    with pytest.raises(CheckpointError, match="holds no Q-table.*q_learning/sarsa/sarsa_lambda/dyna_q run"):
        load_q_table(tmp_path)
