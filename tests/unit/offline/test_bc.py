"""The behaviour-cloning learner: early stopping keeps and restores the best weights; its state resumes exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shoal.agents.dqn.networks import QNetwork
from shoal.agents.offline.bc import BCLearner
from shoal.agents.offline.config import BCConfig
from shoal.envs.make import env_spec
from shoal.io.checkpoint import load_checkpoint, save_checkpoint


def _data(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, 4)).astype(np.float32)
    return {"obs": obs, "action": (obs[:, 2] > 0).astype(np.int64)}  # a rule a network can learn


def _learner(total_steps: int = 0, **cfg: object) -> BCLearner:
    torch.manual_seed(0)
    c = BCConfig(**{"batch_size": 16, "hidden": (16,), "validation": 0.5, **cfg})  # type: ignore[arg-type]
    return BCLearner(QNetwork(env_spec("CartPole-v1"), c.hidden), c, _data(64, 0), _data(32, 1), seed=3,
                     total_steps=total_steps)


def _weights(learner: BCLearner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in learner.net.state_dict().items()}


def test_early_stopping_restores_the_best_weights_and_then_holds_them() -> None:
    # A check every update; only the first counts as better (min_delta is huge), so patience 2 stops at update 3.
    bc = _learner(validate_every=1, patience=2, min_delta=1e9)
    first = bc.step()
    best = _weights(bc)
    assert first["converged"] == 0.0 and first["best_val_loss"] == first["val_loss"] == bc.validation_loss()
    assert bc.step()["converged"] == 0.0
    assert any(not torch.equal(best[k], v) for k, v in bc.net.state_dict().items())  # the weights moved on
    stop = bc.step()
    assert stop["converged"] == 1.0 and bc.converged and bc.best_step == 1 and bc.steps == 3
    assert all(torch.equal(best[k], v) for k, v in bc.net.state_dict().items())  # update 1's weights, restored
    later = bc.step()
    assert later["converged"] == 1.0 and bc.steps == 3
    assert all(torch.equal(best[k], v) for k, v in bc.net.state_dict().items())


def test_a_budget_that_ends_before_early_stopping_ends_on_the_best_weights_not_the_last() -> None:
    # Only update 1's check counts as better (min_delta is huge); patience 100 never stops early, the budget of 4 does.
    bc = _learner(total_steps=4, validate_every=1, patience=100, min_delta=1e9)
    bc.step()
    best = _weights(bc)
    for _ in range(2):
        assert bc.step()["converged"] == 0.0
    assert any(not torch.equal(best[k], v) for k, v in bc.net.state_dict().items())  # the weights moved on
    last = bc.step()  # update 4, the budget's last
    assert last["converged"] == 1.0 and bc.steps == 4 and bc.best_step == 1
    assert all(torch.equal(best[k], v) for k, v in bc.net.state_dict().items())  # update 1's weights, restored
    # The last update runs its own check even off the validate_every grid.
    off_grid = _learner(total_steps=3, validate_every=2, patience=0)
    for _ in range(3):
        off_grid.step()
    assert off_grid.converged and off_grid.best_step in (2, 3)


def test_state_round_trips_through_a_checkpoint_and_training_continues_identically(tmp_path: Path) -> None:
    a = _learner(validate_every=2, patience=5)
    for _ in range(4):  # checks at updates 2 and 4
        a.step()
    save_checkpoint(tmp_path / "ck", {"learner": a.state()}, {})
    loaded, _ = load_checkpoint(tmp_path / "ck.json")
    b = _learner(validate_every=2, patience=5)
    b.load_state(loaded["learner"])
    for _ in range(3):  # updates 5 and 7 report the latest check's losses (4's, then 6's), as without the resume
        ma, mb = a.step(), b.step()
        assert ma == mb and np.isfinite(mb["val_loss"])
    assert all(torch.equal(v, b.net.state_dict()[k]) for k, v in a.net.state_dict().items())
