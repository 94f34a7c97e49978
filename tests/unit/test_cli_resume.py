"""`shoal train --resume DIR` with --steps and key=value, and the line naming the defaults a run starts from."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from shoal.cli import main, parse_args
from shoal.run.resolve import FIXED_ON_RESUME, _fmt


def _config(run_dir):
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def _last_logged_steps(run_dir) -> int:
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    return max(int(float(r.split(",")[header.index("env_steps")])) for r in rows[1:] if r)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A finished 512-step PPO run on CartPole-v1, copied fresh for each test."""
    d = tmp_path_factory.mktemp("first") / "run"
    assert main(["train", "ppo", "--env", "CartPole-v1", "--steps", "512", "--run-dir", str(d), "--quiet", "eval_episodes=1"]) == 0
    return d


@pytest.fixture
def run(first_run, tmp_path):
    import shutil

    shutil.copytree(first_run, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("argv", [
    ["train", "--resume", "D", "lr=0.001", "--steps", "5"],
    ["train", "lr=0.001", "--resume", "D", "--steps", "5"],
    ["train", "--resume", "D", "--steps", "5", "lr=0.001"],
])
def test_overrides_after_resume_are_settings_not_the_algorithm(argv):
    a = parse_args(argv)
    assert a.algo is None and a.resume == "D" and a.steps == 5 and a.overrides == ["lr=0.001"]


def test_resume_with_more_steps_and_a_new_lr(run, capsys):
    before = _config(run)
    assert before["run"]["steps"] == 512 and before["agent"]["lr"] != 0.001
    assert main(["train", "--resume", str(run), "--steps", "1024", "lr=0.001", "eval_episodes=1"]) == 0
    out = capsys.readouterr().out
    assert f"changed: steps 512 -> 1024, lr {before['agent']['lr']} -> 0.001" in out
    after = _config(run)
    assert after["run"]["steps"] == 1024 and after["agent"]["lr"] == 0.001
    assert {k: v for k, v in after["agent"].items() if k != "lr"} == {k: v for k, v in before["agent"].items() if k != "lr"}
    assert _last_logged_steps(run) >= 1024  # it trained on from 512 to the new budget
    assert "env steps: 1,024" in out


@pytest.mark.parametrize("args,needle", [
    (["hidden=[32]"], "hidden cannot change when resuming (the run was built with hidden=[64,64], asked for [32])"),
    (["num_envs=2"], "num_envs cannot change when resuming"),
    (["--seed", "3"], "seed cannot change when resuming"),
    (["--num-actors", "2"], "num_actors cannot change when resuming"),
    (["--env", "Acrobot-v1"], "trains on 'CartPole-v1', not 'Acrobot-v1'"),
    (["dqn"], "holds a 'ppo' run, not 'dqn'"),
])
def test_resume_refuses_settings_that_shape_the_checkpoint(run, capsys, args, needle):
    before = (run / "config.yaml").read_text()
    assert main(["train", "--resume", str(run), *args]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and needle in err[0], err
    assert (run / "config.yaml").read_text() == before  # nothing rewritten


def test_every_fixed_key_is_a_real_setting():
    import dataclasses

    from shoal.agents import registry
    from shoal.settings import RunConfig

    agent_keys = {f.name for s in registry.ALGORITHMS.values() for f in dataclasses.fields(s.config_cls())}
    assert set(FIXED_ON_RESUME["run"]) <= {f.name for f in dataclasses.fields(RunConfig)}
    assert set(FIXED_ON_RESUME["agent"]) <= agent_keys


def test_train_names_the_per_env_defaults_it_applies(tmp_path, capsys):
    assert main(["train", "dqn", "--env", "CartPole-v1", "--steps", "256", "--run-dir", str(tmp_path / "r"),
                 "eval_episodes=1"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("defaults for CartPole-v1 from shoal/configs/dqn.yaml: ")
    entry = yaml.safe_load(resources.files("shoal.configs").joinpath("dqn.yaml").read_text())["CartPole-v1"]
    assert line.split(": ", 1)[1].split() == [f"{k}={_fmt(v)}" for k, v in entry.items()]
    assert "double=true" in line and "n_step=3" in line
    cfg = _config(tmp_path / "r")
    assert cfg["agent"]["double"] is True and cfg["agent"]["n_step"] == 3


def test_train_says_when_an_env_has_no_per_env_defaults(tmp_path, capsys):
    assert main(["train", "dqn", "--env", "Acrobot-v1", "--steps", "128", "--run-dir", str(tmp_path / "r"),
                 "eval_episodes=1", "eval_max_steps=20"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "no per-env defaults for Acrobot-v1 in shoal/configs/dqn.yaml; using the algorithm's generic defaults")


def test_quiet_prints_only_the_result(tmp_path, capsys):
    assert main(["train", "dqn", "--env", "CartPole-v1", "--steps", "128", "--run-dir", str(tmp_path / "r"), "--quiet",
                 "eval_episodes=1"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("run directory: ") and len(out.out.splitlines()) == 1 and "defaults" not in out.err


def test_the_defaults_line_reports_exactly_what_resolution_applies():
    from shoal.agents import registry
    from shoal.run.resolve import defaults_note, per_env_defaults

    checked = 0
    for algo, spec in registry.ALGORITHMS.items():
        _, _, generic = per_env_defaults(algo, "NoSuchEnv-v0")
        envs = [] if generic is None else [k for k in yaml.safe_load(
            resources.files("shoal.configs").joinpath(f"{algo}.yaml").read_text()) if k != "default"]
        for env in envs + ["NoSuchEnv-v0"]:
            _, entry, generic = per_env_defaults(algo, env)
            assert {**(generic or {}), **(entry or {})} == spec.defaults(env), (algo, env)
            note = defaults_note(algo, env)
            assert note.startswith("defaults for" if entry is not None else "no per-env defaults"), note
            checked += 1
    assert checked > len(registry.ALGORITHMS)


def test_a_reshaping_setting_missing_from_the_fixed_list_still_fails_cleanly(run, capsys, monkeypatch):
    import shoal.run.resolve as resolve_mod

    monkeypatch.setattr(resolve_mod, "FIXED_ON_RESUME", {"run": (), "agent": ()})
    before = (run / "config.yaml").read_text()
    assert main(["train", "--resume", str(run), "hidden=[32]"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "does not fit the run's settings" in err[0], err
    assert (run / "config.yaml").read_text() == before  # only a checkpoint that loads rewrites the config
