"""`shoal tune`: resumable SQLite studies, median pruning of bad trials, best.yaml -> `shoal train --config`."""

from __future__ import annotations

import csv
from pathlib import Path

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
    # The resumed run samples new points (each trial's sampler seed follows its trial number).
    assert {t.params["lr"] for t in trials[2:]}.isdisjoint({t.params["lr"] for t in first})
    for t in trials:  # each trial trained through the runner in its own run directory
        run_dir = tmp_path / "s" / f"trial_{t.number:04d}"
        assert t.user_attrs["run_dir"] == str(run_dir)
        assert (run_dir / "eval.json").exists() and (run_dir / "config.yaml").exists()
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["agent"]["lr"] == pytest.approx(t.params["lr"])
        # Every periodic evaluation reached Optuna at its budget point, env_steps // eval_every.
        with (run_dir / "metrics.csv").open() as f:
            evals_at = [int(float(r["env_steps"])) for r in csv.DictReader(f) if r["eval_return_mean"]]
        assert evals_at and sorted(t.intermediate_values) == [e // (512 // 5) for e in evals_at]


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
    result = tune("ppo", "CartPole-v1", 2, steps=64, study_dir=tmp_path / "r", space=lr_space, prune=False, evals=1,
                  overrides={"eval_episodes": 1, "rollout_length": 8}, jobs="ray", parallel=2)
    trials = _trials(result.storage, result.study_name)
    assert sorted(t.number for t in trials) == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.params["lr"] for t in trials}) == 2  # each task sampled with its own seed
    assert all((tmp_path / "r" / f"trial_{t.number:04d}" / "eval.json").exists() for t in trials)
    assert (tmp_path / "r" / "best.yaml").exists()


# ---------------------------------------------------------------------------------------------
# The tuner's bookkeeping against a scripted runner: shoal.run.runner.train replaced by a fake
# that steps its budget in chunks, calls on_eval where the real runner would, and writes the
# files a run directory holds. Its returns are scripted from the trial's lr, so which trials the
# pruner should stop is known.

def _fake_train(chunks, score):
    """A stand-in for ``train``: trial k steps ``chunks[k % len(chunks)]`` env steps per iteration."""
    import json

    from shoal.run.resolve import resolve
    from shoal.run.runner import Run

    calls = []

    def train(algo, env, *, steps, seed, run_dir, config, overrides, on_eval, **_):
        cfg = resolve(algo, env, env, config, dict(overrides), {"steps": steps, "seed": seed})
        chunk = chunks[len(calls) % len(chunks)]
        record = {"lr": overrides["lr"], "evals": [], "chunk": chunk}
        calls.append(record)
        every, total = cfg.run.eval_every, cfg.run.steps
        env_steps, next_eval = 0, every
        while env_steps < total:
            env_steps += chunk
            if env_steps >= next_eval:
                next_eval = (env_steps // every + 1) * every
                ret = score(overrides["lr"], env_steps / total)
                record["evals"].append(env_steps)
                if on_eval(env_steps, ret):
                    break
        final = score(overrides["lr"], env_steps / total)
        rd = Path(run_dir)
        rd.mkdir(parents=True, exist_ok=True)
        (rd / "config.yaml").write_text(yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False))
        (rd / "eval.json").write_text(json.dumps({"mean_return": final, "episodes": 1}))
        record["env_steps"] = env_steps
        return Run(rd, cfg, env_steps, {"mean_return": final, "episodes": 1, "env_steps": env_steps})

    return train, calls


def _lr_score(lr, frac):
    """Higher for larger lr (log scale), growing with the budget fraction."""
    return float((np.log10(lr) + 8.0) * 10.0 * frac)



@pytest.fixture
def fake_runner(monkeypatch):
    def install(chunks=(128,), score=_lr_score):
        train, calls = _fake_train(list(chunks), score)
        monkeypatch.setattr("shoal.run.runner.train", train)
        return calls
    return install


def test_pruner_compares_trials_at_equal_budgets_and_never_prunes_a_finished_trial(tmp_path, lr_space, fake_runner):
    # Iterations of 300 and 100 env steps: the evaluations fall at different env steps in
    # different trials, and each is reported at its budget point env_steps // eval_every.
    calls = fake_runner(chunks=(300, 100))
    steps, evals = 2048, 4
    result = tune("ppo", "CartPole-v1", 12, steps=steps, study_dir=tmp_path / "p", space=lr_space, evals=evals,
                  startup_trials=3, warmup_evals=3, overrides={"eval_episodes": 1})
    every = steps // evals
    trials = _trials(result.storage, result.study_name)
    assert len(trials) == 12
    for t, call in zip(trials, calls):
        assert sorted(t.intermediate_values) == [e // every for e in call["evals"]]
        if call["env_steps"] >= steps:  # ran its full budget: complete with its final value, never pruned
            assert t.state == optuna.trial.TrialState.COMPLETE, (t.number, t.intermediate_values)
            assert t.value == pytest.approx(_lr_score(call["lr"], call["env_steps"] / steps))
        else:
            assert t.state == optuna.trial.TrialState.PRUNED
            last = max(t.intermediate_values)
            assert last >= 3 and last * every < steps  # after the warmup, and before the full budget
            complete = [c for c in trials if c.state == optuna.trial.TrialState.COMPLETE and c.number < t.number]
            earlier = [c.intermediate_values[last] for c in complete]
            assert len(earlier) >= 3 and t.intermediate_values[last] < np.median(earlier)
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in trials)


def test_a_resumed_study_refuses_other_settings(tmp_path, lr_space, fake_runner):
    from shoal.errors import ConfigError

    fake_runner()
    kw = dict(study_dir=tmp_path / "s", space=lr_space, evals=2, prune=False, overrides={"eval_episodes": 1})
    tune("ppo", "CartPole-v1", 1, steps=512, **kw)
    with pytest.raises(ConfigError, match=r"other settings: steps 512 \(now 1024\)") as e:
        tune("ppo", "CartPole-v1", 1, steps=1024, **kw)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="evals 2 .now 4.*eval_every 256 .now 128"):
        tune("ppo", "CartPole-v1", 1, steps=512, **{**kw, "evals": 4})
    other = tmp_path / "space2.yaml"
    other.write_text(LR_SPACE.replace("3.0e-3", "1.0e-2"))
    with pytest.raises(ConfigError, match="other settings: space"):
        tune("ppo", "CartPole-v1", 1, steps=512, **{**kw, "space": other})
    study = optuna.create_study(study_name="minimizing", storage=f"sqlite:///{tmp_path / 'm' / 'study.db'}"
                                if (tmp_path / "m").mkdir() is None else None, direction="minimize")
    with pytest.raises(ConfigError, match="minimizes"):
        tune("ppo", "CartPole-v1", 1, steps=512, study_name=study.study_name, **{**kw, "study_dir": tmp_path / "m"})


def test_trials_of_a_dead_session_and_of_a_dead_worker_are_failed(tmp_path, lr_space, fake_runner, monkeypatch):
    import time

    import shoal.run.tune as tune_mod
    from shoal.errors import ShoalError

    fake_runner()
    kw = dict(steps=512, study_dir=tmp_path / "s", space=lr_space, evals=2, prune=False, overrides={"eval_episodes": 1})
    result = tune("ppo", "CartPole-v1", 1, **kw)
    # A session that died mid-trial: a RUNNING trial whose heartbeat stopped.
    monkeypatch.setattr(tune_mod, "STALE_AFTER_S", 1)
    storage = tune_mod._storage(result.storage)
    study = optuna.load_study(study_name=result.study_name, storage=storage)
    orphan = tune_mod._ask(study)
    storage.record_heartbeat(tune_mod._trial_id(storage, result.study_name, orphan))
    time.sleep(2.2)
    tune("ppo", "CartPole-v1", 1, **kw)
    states = {t.number: t.state for t in _trials(result.storage, result.study_name)}
    assert states[orphan] == optuna.trial.TrialState.FAIL

    # A worker that dies before telling (a Ray task whose process was killed): the driver tells FAIL.
    def dying_jobs(fn, calls, **_):
        yield 0, None, ShoalError("the Ray task's worker failed: killed")
        yield 1, fn(*calls[1]), None

    monkeypatch.setattr("shoal.run.parallel.run_jobs", dying_jobs)
    r = tune("ppo", "CartPole-v1", 2, jobs="ray", **kw)
    first, second = (t["number"] for t in r.trials)
    assert r.trials[0] == {"number": first, "state": "failed", "error": "the Ray task's worker failed: killed"}
    states = {t.number: t.state for t in _trials(result.storage, result.study_name)}
    assert states[first] == optuna.trial.TrialState.FAIL and states[second] == optuna.trial.TrialState.COMPLETE
    assert not [t for t in _trials(result.storage, result.study_name) if t.state == optuna.trial.TrialState.RUNNING]


def test_an_interrupted_session_leaves_no_trial_running(tmp_path, lr_space, monkeypatch):
    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr("shoal.run.runner.train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune("ppo", "CartPole-v1", 3, steps=512, study_dir=tmp_path / "s", space=lr_space, evals=2,
             overrides={"eval_episodes": 1})
    trials = _trials(f"sqlite:///{tmp_path / 's' / 'study.db'}", "ppo_CartPole-v1")
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL]


def test_best_yaml_comes_from_the_study_even_from_another_folder_and_with_trial_dirs_gone(tmp_path, lr_space,
                                                                                          fake_runner, monkeypatch):
    import shutil

    fake_runner()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    kw = dict(steps=512, space=lr_space, evals=2, prune=False, overrides={"eval_episodes": 1})
    monkeypatch.chdir(tmp_path / "a")
    first = tune("ppo", "CartPole-v1", 2, study_dir="s", **kw)  # a relative folder
    assert first.study_dir == tmp_path / "a" / "s"
    runs = [t.user_attrs["run_dir"] for t in _trials(first.storage, first.study_name)]
    assert runs == [str(tmp_path / "a" / "s" / f"trial_{n:04d}") for n in (0, 1)]
    for d in runs:
        shutil.rmtree(d)
    # Resumed from another folder, the trial directories gone: best.yaml is the stored config's.
    monkeypatch.chdir(tmp_path / "b")
    fake_runner(score=lambda lr, frac: -1.0)  # the new trial is worse: the best stays an earlier one
    again = tune("ppo", "CartPole-v1", 1, study_dir=tmp_path / "a" / "s", **kw)
    assert again.best["number"] == first.best["number"]
    doc = yaml.safe_load(again.out.read_text())
    assert doc["lr"] == pytest.approx(first.best["params"]["lr"])
    assert doc["agent"]["num_envs"] == first.best["config"]["agent"]["num_envs"]


def test_a_second_study_in_the_same_folder_is_refused(tmp_path, lr_space, fake_runner):
    from shoal.errors import ConfigError

    fake_runner()
    kw = dict(steps=512, study_dir=tmp_path / "s", space=lr_space, evals=2, prune=False, overrides={"eval_episodes": 1})
    tune("ppo", "CartPole-v1", 1, study_name="one", **kw)
    with pytest.raises(ConfigError, match="holds the trials of study 'one'"):
        tune("ppo", "CartPole-v1", 1, study_name="two", **kw)


def test_a_missing_optuna_names_the_extra(tmp_path, monkeypatch):
    import sys

    from shoal.errors import ConfigError

    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ConfigError, match=r"pip install 'shoal\[tune\]'"):
        tune("ppo", "CartPole-v1", 1, steps=512, study_dir=tmp_path / "s")


def test_two_sessions_at_once_on_one_storage_sample_different_points(tmp_path, lr_space, fake_runner):
    kw = dict(steps=512, study_dir=tmp_path / "s", space=lr_space, evals=1, prune=False, overrides={"eval_episodes": 1})
    nested: list = []

    def score(lr, frac):
        if not nested:  # while session A's first trial trains, session B runs one on the same storage
            nested.append(None)
            nested[0] = tune("ppo", "CartPole-v1", 1, **kw)
        return _lr_score(lr, frac)

    fake_runner(score=score)
    a = tune("ppo", "CartPole-v1", 2, **kw)
    trials = _trials(a.storage, a.study_name)
    assert sorted(t.number for t in trials) == [0, 1, 2] and [t["number"] for t in nested[0].trials] == [1]
    assert len({t.params["lr"] for t in trials}) == 3  # each trial's sampler is seeded by its own number



def test_a_ten_trial_study_of_real_runs_prunes_at_least_one_trial(tmp_path, lr_space):
    """The real runner end to end: PPO on CartPole with learning rates over four orders of magnitude."""
    result = tune("ppo", "CartPole-v1", 10, steps=4096, study_dir=tmp_path / "p", space=lr_space, evals=4,
                  startup_trials=3, warmup_evals=1, overrides={"eval_episodes": 2})
    trials = _trials(result.storage, result.study_name)
    assert len(trials) == 10
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [(t.params, t.intermediate_values) for t in trials]
    for t in pruned:  # stopped by the runner before its budget, with its run directory complete
        run_dir = Path(t.user_attrs["run_dir"])
        assert (run_dir / "eval.json").exists()
        with (run_dir / "metrics.csv").open() as f:
            assert max(int(float(r["env_steps"])) for r in csv.DictReader(f)) < 4096
