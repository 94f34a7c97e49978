"""h-DQN learns the stochastic decision process (Kulkarni et al. 2016, section 4.1); flat DQN does not.

Each seed trains ``hdqn`` on ``shoal/StochasticDecision-v0`` through ``shoal.train`` with the shipped
per-env defaults (100,000 env steps, within a budget of 200,000) and evaluates both levels
greedily on 1,000 episodes: the mean extrinsic return must reach 0.10 (the paper's h-DQN gets about
0.13, the optimum is 0.208). Flat ``dqn`` with the same DQN settings, on the same chain with one-hot
observations (what h-DQN's networks see), and the same budget must stay below it.

Measured (``pytest tests/learning/test_hdqn.py -m slow -s``): h-DQN 0.2030, 0.2090, 0.2050 on seeds 0, 1, 2;
DQN 0.0100 on each; 35-75 s per seed on a 2-core machine. Curves: ``docs/hdqn.md``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import shoal
from shoal.agents.dqn.config import DQNConfig
from shoal.envs.toy.stochastic_decision import one_hot_stochastic_decision
from shoal.run.resolve import resolve

ENV = "shoal/StochasticDecision-v0"
EPISODES = 1000


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hdqn_beats_flat_dqn_on_the_stochastic_decision_process(seed: int, tmp_path: Path) -> None:
    resolved = resolve("hdqn", ENV, ENV, None, {}, {})
    steps = resolved.run.steps
    assert steps <= 200_000
    hdqn = shoal.train("hdqn", ENV, seed=seed, run_dir=tmp_path / "hdqn", quiet=True, tensorboard=False,
                       overrides={"eval_episodes": EPISODES})
    shared = {f.name for f in dataclasses.fields(DQNConfig)}
    settings = {k: v for k, v in dataclasses.asdict(resolved.agent).items() if k in shared}
    dqn = shoal.train("dqn", one_hot_stochastic_decision, steps=steps, seed=seed, run_dir=tmp_path / "dqn", quiet=True,
                      tensorboard=False, overrides={**settings, "eval_episodes": EPISODES})
    h, d = hdqn.eval["mean_return"], dqn.eval["mean_return"]
    print(f"seed {seed}: greedy return over {EPISODES} episodes after {hdqn.env_steps} env steps: h-DQN {h:.4f}, DQN {d:.4f}")
    assert hdqn.env_steps == dqn.env_steps and steps <= hdqn.env_steps <= 200_000  # whole iterations of 64 steps
    assert hdqn.eval["episodes"] == dqn.eval["episodes"] == EPISODES
    assert h >= 0.10, (seed, h, d)
    assert d < h, (seed, h, d)
