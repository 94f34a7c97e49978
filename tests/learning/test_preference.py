"""SAC trained only on a reward learned from synthetic preferences solves Pendulum-v1.

Each run is what ``shoal train pref_sac --env shoal/Pendulum-v1`` does with the shipped defaults
(shoal/configs/pref_sac.yaml: SAC's Pendulum settings, 50k env steps, a budget of 1,000 oracle
labels); the RL learner never sees the env's reward. The runner's final evaluation (20 episodes,
deterministic actions) is on the true reward. A random policy scores about -1200.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import shoal


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pref_sac_on_learned_reward_solves_pendulum(tmp_path: Path, seed: int) -> None:
    run = shoal.train("pref_sac", "shoal/Pendulum-v1", seed=seed, run_dir=tmp_path / f"pref_sac_s{seed}",
                      quiet=True, tensorboard=False)
    pref = [row for row in run.history if "reward_corr" in row][-1]
    print(f"pref_sac seed {seed}: {run.env_steps} env steps, {pref['labels']:.0f} labels, eval "
          f"{run.eval['mean_return']:.1f}, learned-vs-true segment return correlation {pref['reward_corr']:.3f}, "
          f"held-out pair accuracy {pref['reward_heldout_accuracy']:.3f}, {run.wall_time_s:.0f} s")
    assert run.env_steps <= 50_000 and pref["labels"] <= 1000
    assert run.eval["mean_return"] >= -300, run.eval
