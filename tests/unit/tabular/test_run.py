"""Tabular runs through the real runner: the Q-table is checkpointed and a resumed run continues from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import shoal
from shoal.agents.tabular.render import load_q_table


def test_resume_continues_from_the_checkpointed_q_table(tmp_path: Path) -> None:
    d = tmp_path / "run"
    first = shoal.train("sarsa_lambda", "shoal/Treasure1D-v0", steps=400, seed=0, run_dir=d, quiet=True,
                        tensorboard=False, overrides={"eval_episodes": 1})
    q_before = load_q_table(d)
    assert first.env_steps == 400 and np.abs(q_before).sum() > 0
    second = shoal.train(resume=d, steps=800, quiet=True, tensorboard=False)
    assert second.env_steps == 800
    q_after = load_q_table(d)
    assert not np.array_equal(q_before, q_after)  # learning went on from the saved table
    assert (q_after[:5].argmax(axis=1) == 1).all()
