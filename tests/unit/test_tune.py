"""`shoal tune`: resumable SQLite studies, median pruning of bad trials, best.yaml -> `shoal train --config`."""

from __future__ import annotations

import csv

import numpy as np
import optuna
import pytest
import yaml

from shoal.cli import main
from shoal.run.tune import tune

LR_SPACE = """
ppo:
  lr: {type: float, low: 1.0e-7, high: 3.0e-3, log: true}
"""


@pytest.fixture
def lr_space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(LR_SPACE)
    return path


def _trials(url, name):
    return optuna.load_study(study_name=name, storage=url).trials


def test_a_study_resumes_from_its_sqlite_file_with_the_trials_of_both_runs(tmp_path, lr_space, capsys):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["tune", "ppo", "--env", "CartPole-v1", "--trials", "2", "--steps", "512", "--storage", url,
            "--study-name", "s", "--dir", str(tmp_path / "s"), "--space", str(lr_space), "--pruner", "none",
            "eval_episodes=2"]
    assert main(args) == 0
    first = _trials(url, "s")
    assert [t.number for t in first] == [0, 1]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 trials so far" in out and "4 in the study" in out
    trials = _trials(url, "s")
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [t.params for t in trials[:2]] == [t.params for t in first]  # the first run's trials are kept as they were
    # The resumed run samples new points (its sampler seeds follow the study's trial count).
    assert {t.params["lr"] for t in trials[2:]}.isdisjoint({t.params["lr"] for t in first})
    for t in trials:  # each trial trained through the runner in its own run directory
        run_dir = tmp_path / "s" / f"trial_{t.number:04d}"
        assert t.user_attrs["run_dir"] == str(run_dir)
        assert (run_dir / "eval.json").exists() and (run_dir / "config.yaml").exists()
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["agent"]["lr"] == pytest.approx(t.params["lr"])


def test_the_median_pruner_prunes_clearly_bad_trials_of_a_seeded_study(tmp_path, lr_space):
    steps = 2048
    result = tune("ppo", "CartPole-v1", 10, steps=steps, study_dir=tmp_path / "p", space=lr_space, evals=4,
                  startup_trials=3, warmup_evals=1, overrides={"eval_episodes": 3})
    trials = _trials(result.storage, result.study_name)
    assert len(trials) == 10
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned, [(t.params, t.intermediate_values) for t in trials]
    assert len(complete) >= 3  # the pruner only starts after its startup trials
    for t in pruned:
        last = max(t.intermediate_values)  # steps are evaluation indices, 0 the first
        assert last >= 1  # warmup_evals=1: never on the first evaluation
        # Stopped there, cleanly: fewer steps than the budget, a checkpoint and a final evaluation.
        run_dir = tmp_path / "p" / f"trial_{t.number:04d}"
        with (run_dir / "metrics.csv").open() as f:
            steps_logged = [int(float(r["env_steps"])) for r in csv.DictReader(f)]
        assert max(steps_logged) < steps
        assert (run_dir / "eval.json").exists() and list((run_dir / "checkpoints").glob("*.json"))
        # Worse than the median, at that evaluation, of the trials that had completed before it.
        earlier = [c.intermediate_values[last] for c in complete if c.number < t.number]
        assert len(earlier) >= 3 and t.intermediate_values[last] < np.median(earlier)
    # Trials with a learning rate orders of magnitude too small are among those stopped early.
    assert min(t.params["lr"] for t in pruned) < 1e-5
    assert result.best["number"] in [t.number for t in complete]


def test_best_yaml_trains_with_shoal_train_config(tmp_path, lr_space):
    best = tmp_path / "best.yaml"
    assert main(["tune", "ppo", "--env", "CartPole-v1", "--trials", "2", "--steps", "512", "--dir", str(tmp_path / "s"),
                 "--space", str(lr_space), "--pruner", "none", "--out", str(best), "eval_episodes=2", "num_envs=4"]) == 0
    doc = yaml.safe_load(best.read_text())
    study = optuna.load_study(study_name="ppo_CartPole-v1", storage=f"sqlite:///{(tmp_path / 's' / 'study.db').resolve()}")
    assert doc["algo"] == "ppo" and doc["env"] == "CartPole-v1"
    assert doc["lr"] == pytest.approx(study.best_trial.params["lr"])
    trial_cfg = yaml.safe_load((tmp_path / "s" / f"trial_{study.best_trial.number:04d}" / "config.yaml").read_text())
    # No algorithm or env on the command line: best.yaml names them.
    assert main(["train", "--config", str(best), "--steps", "256", "--run-dir", str(tmp_path / "again"), "--quiet"]) == 0
    cfg = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())
    assert (cfg["algo"], cfg["env"]) == ("ppo", "CartPole-v1")
    assert cfg["agent"] == trial_cfg["agent"]  # the tuned lr, the shared num_envs=4 and every other setting
    assert cfg["agent"]["num_envs"] == 4 and cfg["agent"]["lr"] == pytest.approx(doc["lr"])
    assert cfg["run"]["steps"] == 256 and (tmp_path / "again" / "eval.json").exists()


def test_a_sampled_combination_the_runner_refuses_fails_that_trial_only(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("ppo:\n  minibatch_size: {type: categorical, choices: [-4, 64]}\n")
    result = tune("ppo", "CartPole-v1", 6, steps=256, study_dir=tmp_path / "f", space=space, prune=False, evals=1,
                  overrides={"eval_episodes": 1})
    states = {t["params"]["minibatch_size"]: t["state"] for t in result.trials}
    assert states.get(-4) == "failed" and states.get(64) == "complete", result.trials
    failed = [t for t in result.trials if t["state"] == "failed"]
    assert "minibatch_size" in failed[0]["error"]
    assert result.best["params"] == {"minibatch_size": 64}


@pytest.mark.ray
def test_trials_run_in_parallel_as_ray_tasks(tmp_path, lr_space):
    result = tune("ppo", "CartPole-v1", 2, steps=256, study_dir=tmp_path / "r", space=lr_space, prune=False, evals=1,
                  overrides={"eval_episodes": 1}, jobs="ray", parallel=2)
    trials = _trials(result.storage, result.study_name)
    assert sorted(t.number for t in trials) == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.params["lr"] for t in trials}) == 2  # each task sampled with its own seed
    assert all((tmp_path / "r" / f"trial_{t.number:04d}" / "eval.json").exists() for t in trials)
    assert (tmp_path / "r" / "best.yaml").exists()
