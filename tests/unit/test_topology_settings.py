"""Topology settings belong to the topology: `--topology`, `topology.KEY=VALUE`, config.yaml, fit checks."""

import subprocess
import sys

import pytest
import yaml

import shoal
from shoal.cli import main
from shoal.errors import ConfigError
from shoal.run.resolve import resolve
from shoal.topologies.impala import ImpalaSettings


def test_topology_settings_resolve_from_every_source(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("topology:\n  queue_size: 48\n  pull_period: 3\n")
    r = resolve("impala", "CartPole-v1", "CartPole-v1", cfg, {"topology.pull_period": 5}, {})
    assert r.run.topology == "impala"
    assert isinstance(r.topology, ImpalaSettings)
    assert (r.topology.queue_size, r.topology.pull_period) == (48, 5)  # key=value beats the file
    assert r.to_yaml_dict()["topology"]["pull_period"] == 5


def test_unknown_topology_settings_and_settingless_topologies_are_one_line_errors():
    with pytest.raises(ConfigError, match="topology impala"):
        resolve("impala", "CartPole-v1", "CartPole-v1", None, {"topology.pul_period": 2}, {})
    with pytest.raises(ConfigError, match="has no settings"):
        resolve("ppo", "CartPole-v1", "CartPole-v1", None, {"topology.queue_size": 2}, {})


def test_any_algorithm_runs_on_a_topology_it_fits_and_the_run_records_it(tmp_path):
    r = shoal.train("ppo", "CartPole-v1", steps=2048, topology="impala", run_dir=tmp_path / "run", quiet=True,
                    tensorboard=False, overrides={"topology.pull_period": 2, "eval_episodes": 1, "num_envs": 4})
    saved = yaml.safe_load((r.run_dir / "config.yaml").read_text())
    assert saved["run"]["topology"] == "impala" and saved["topology"]["pull_period"] == 2
    assert "learner_env_steps" in (r.run_dir / "metrics.csv").read_text().splitlines()[0]


def test_a_misfit_is_a_one_line_error_and_leaves_no_run_directory(tmp_path, capsys):
    code = main(["train", "dqn", "--env", "CartPole-v1", "--topology", "impala", "--steps", "500",
                 "--run-dir", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "does not fit the impala topology" in err[0]
    assert not (tmp_path / "run").exists()


def test_list_shows_the_algorithm_by_topology_matrix():
    p = subprocess.run([sys.executable, "-m", "shoal.cli", "list"], capture_output=True, text=True, timeout=120)
    header = next(line.split() for line in p.stdout.splitlines() if line.strip().startswith("local"))
    rows = {line.split()[0]: line.split()[1:] for line in p.stdout.splitlines() if line.startswith("  ") and
            len(line.split()) == len(header) + 1}
    col = {t: i for i, t in enumerate(header)}
    assert rows["dqn"][col["apex"]] == "+" and rows["dqn"][col["impala"]] == "."
    assert rows["impala"][col["impala"]] == "D" and rows["a3c"][col["a3c"]] == "D"
    assert rows["ppo"][col["a3c"]] == "."  # PPO's epochs make a pushed gradient more than one update
