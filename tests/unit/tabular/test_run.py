"""Tabular runs through the real runner: the Q-table is checkpointed and a resumed run continues from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shoal
from shoal.agents.tabular.learner import TabularLearner
from shoal.agents.tabular.render import load_q_table
from shoal.io.checkpoint import list_checkpoints, load_checkpoint


def test_resume_continues_from_the_checkpointed_q_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "run"
    first = shoal.train("sarsa_lambda", "shoal/Treasure1D-v0", steps=400, seed=0, run_dir=d, quiet=True,
                        tensorboard=False, overrides={"eval_episodes": 1})
    q_before = load_q_table(d)
    ck, _ = load_checkpoint(list_checkpoints(d / "checkpoints")[-1])
    assert first.env_steps == 400 and np.abs(q_before).sum() > 0
    # What the learner's first update after the resume starts from: the table it updates (its numpy
    # view, not just the module's buffer) and its counters.
    seen: list[tuple[np.ndarray, int, int]] = []
    real_step = TabularLearner.step

    def spy(self: TabularLearner, data=None):
        if not seen:
            seen.append((self.q.copy(), self.version, self.env_steps))
        return real_step(self, data)

    monkeypatch.setattr(TabularLearner, "step", spy)
    second = shoal.train(resume=d, steps=800, quiet=True, tensorboard=False)
    assert second.env_steps == 800 and seen
    q_start, version_start, steps_start = seen[0]
    assert np.array_equal(q_start, q_before)  # it starts from the saved table, not from zeros
    assert (version_start, steps_start) == (ck["program"]["learner"]["version"], ck["program"]["learner"]["env_steps"]) \
        and steps_start == 400
    q_after = load_q_table(d)
    end, _ = load_checkpoint(list_checkpoints(d / "checkpoints")[-1])
    assert not np.array_equal(q_before, q_after)  # and learning went on from there
    assert end["program"]["learner"]["env_steps"] == 800 and end["program"]["learner"]["version"] > version_start
    assert (q_after[:5].argmax(axis=1) == 1).all()
