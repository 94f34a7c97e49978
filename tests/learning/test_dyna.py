"""Dyna-Q plans its way to the optimal cliff path long before Q-learning; Dyna-Q+ adapts to the blocking maze.

The cliff runs go through the real runner (``shoal.train``, what ``shoal train`` calls) with fixed
seeds and an evaluation every 100 steps. The blocking-maze comparison (20 runs) steps the shipped
``dyna_q`` builder's actor and learner directly, the way the ``local`` topology does, without the
runner's per-step costs; one run through ``shoal.train`` checks that the two are the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shoal
from shoal.agents.tabular.dyna import DynaQBuilder
from shoal.core.seeding import derive_seed
from shoal.core.types import StepResult
from shoal.envs.make import env_spec, make_env
from shoal.run.resolve import resolve

SEEDS = range(6)
EVAL_EVERY = 100


def _train(algo: str, env: str, tmp_path: Path, seed: int, steps: int, **overrides):
    return shoal.train(algo, env, steps=steps, seed=seed, run_dir=tmp_path / f"{algo}_{overrides.get('plus', '')}_s{seed}",
                       quiet=True, tensorboard=False, overrides=overrides)


def _eval_returns(run) -> list[tuple[int, float]]:
    """``(env steps, mean return)`` of every periodic evaluation of a run."""
    return [(int(r["env_steps"]), r["eval_return_mean"]) for r in run.history if "eval_return_mean" in r]


#: The cliff settings of both methods: alpha 0.1, epsilon 0.1, gamma 1, a greedy evaluation every 100 steps.
#: The greedy policy is deterministic on a deterministic env, so one episode tells its return; one cut at
#: 100 steps is not the 13-step optimal path.
CLIFF = {"alpha": 0.1, "epsilon": 0.1, "gamma": 1.0, "eval_every": EVAL_EVERY, "eval_episodes": 1, "eval_max_steps": 100}


def test_dyna_q_finds_the_optimal_cliff_path_within_1000_steps(tmp_path: Path) -> None:
    """50 planning updates per real step (the default): an evaluation reaches -13 by step 1,000, and the
    final one at 1,000 is -13, on 5 of the 6 seeds at least (all 6 when measured)."""
    runs = [_train("dyna_q", "CliffWalking-v1", tmp_path, s, 1000, planning_steps=50, **CLIFF) for s in SEEDS]
    evals = [_eval_returns(run) for run in runs]
    assert all([step for step, _ in e] == list(range(EVAL_EVERY, 1001, EVAL_EVERY)) for e in evals)
    first = [next((step for step, r in e if r == -13.0), None) for e in evals]
    assert sum(f is not None and f <= 1000 for f in first) >= 5, first
    assert sum(run.eval["mean_return"] == -13.0 for run in runs) >= 5, [run.eval["mean_return"] for run in runs]


def test_q_learning_with_the_same_settings_does_not_find_it_within_2000_steps(tmp_path: Path) -> None:
    """The other half of the comparison: the same alpha and epsilon, no planning: no evaluation up to step
    2,000 (one every 100 steps) walks the optimal path, on any of the seeds."""
    for s in SEEDS:
        evals = _eval_returns(_train("q_learning", "CliffWalking-v1", tmp_path, s, 2000, **CLIFF))
        assert [step for step, _ in evals] == list(range(EVAL_EVERY, 2001, EVAL_EVERY))
        assert not any(r == -13.0 for _, r in evals), (s, evals)


BLOCKING = "shoal/BlockingMaze-v0"


def _blocking_maze_run(plus: bool, seed: int) -> tuple[list[int], np.ndarray]:
    """The env steps at which the episodes of a shipped-config ``dyna_q`` run on the blocking maze end,
    and its final Q-table.

    One actor on one env copy and the learner share the Q-table (``rollout_length`` 1: the actor
    always acts on the newest table), with the seeds the ``local`` topology derives; the run's
    settings are the shipped per-env defaults (3,000 steps, alpha 1, gamma 0.95, epsilon 0.1,
    10 planning steps, kappa 1e-4).
    """
    cfg = resolve("dyna_q", BLOCKING, BLOCKING, None, {"plus": plus}, {"seed": seed})
    builder = DynaQBuilder(cfg.agent, env_spec(BLOCKING), total_steps=cfg.run.steps, seed=seed)
    table = builder.make_networks()
    learner = builder.make_learner(table, {})
    actor = builder.make_actor(table, 1, 0, 1, derive_seed(seed, "actor", 0))
    env = make_env(BLOCKING)
    obs = np.array([env.reset(seed=derive_seed(seed, "env", 0))[0]])
    actor.observe_first(obs)
    ends: list[int] = []
    try:
        for t in range(1, cfg.run.steps + 1):
            action = actor.select_action(obs)
            o, r, terminated, truncated, _ = env.step(int(action[0]))
            final = np.array([o])
            if terminated or truncated:
                assert terminated and r == 1.0  # only the goal ends an episode (the time limit is 10,000)
                ends.append(t)
                o = env.reset()[0]
            obs = np.array([o])
            actor.observe(action, StepResult(obs, np.array([float(r)]), np.array([terminated]), np.array([truncated]), final))
            learner.step([actor.drain()])
    finally:
        env.close()
    return ends, learner.q.copy()


@pytest.fixture(scope="module")
def shipped_dyna_q_plus_run(tmp_path_factory: pytest.TempPathFactory):
    """``shoal train dyna_q --env shoal/BlockingMaze-v0 plus=true`` with every shipped default, seed 0."""
    return _train("dyna_q", BLOCKING, tmp_path_factory.mktemp("blocking"), 0, 3000, plus=True)


def test_the_direct_blocking_maze_loop_is_the_runners(shipped_dyna_q_plus_run) -> None:
    from shoal.agents.tabular.render import load_q_table

    ends, q = _blocking_maze_run(True, 0)
    last = shipped_dyna_q_plus_run.history[-1]
    assert last["env_steps"] == 3000 and last["episodes"] == len(ends) > 0
    np.testing.assert_array_equal(q, load_q_table(shipped_dyna_q_plus_run.run_dir))  # the same run, update for update


def test_the_final_blocking_maze_evaluation_walks_the_new_path(shipped_dyna_q_plus_run) -> None:
    """Past step 1,000 only the 16-step way round the wall's left end is open, and the shipped run is
    evaluated on that maze: the greedy policy takes it (on the first layout it could not, until each
    evaluation env's own wall moved 1,000 steps in)."""
    ev = shipped_dyna_q_plus_run.eval
    assert ev["mean_return"] == 1.0 and ev["mean_length"] == 16.0 and ev["truncated_episodes"] == 0, ev


def test_dyna_q_plus_collects_more_reward_than_dyna_q_on_the_blocking_maze() -> None:
    """The book's Figure 8.4 experiment with the shipped defaults, 10 seeds each.

    The maze pays +1 only when an episode reaches the goal, and ends it there, so the cumulative
    reward is the number of finished episodes by step 3,000.
    """
    total = {plus: np.array([len(_blocking_maze_run(plus, s)[0]) for s in range(10)], float) for plus in (False, True)}
    assert total[True].mean() > total[False].mean(), total
