"""`shoal plot` overlays runs into a PNG; bad input is a one-line error."""

import pytest

import shoal
from shoal.errors import ShoalError
from shoal.run.plots import plot_runs, read_metrics


def test_plot_two_runs(tmp_path):
    dirs = []
    for seed in (0, 1):
        r = shoal.train("ppo", "CartPole-v1", steps=1024, seed=seed, run_dir=tmp_path / f"r{seed}", quiet=True,
                        tensorboard=False, overrides={"eval_episodes": 1, "eval_every": 512})
        dirs.append(r.run_dir)
    out = plot_runs(dirs, tmp_path / "c.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    cols = read_metrics(dirs[0])
    assert cols["env_steps"][-1] == 1024 and "eval_return_mean" in cols


def test_plot_errors(tmp_path):
    with pytest.raises(ShoalError, match="does not exist"):
        plot_runs([tmp_path / "nothing"], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_metrics_columns_appearing_later_are_kept(tmp_path):
    import csv

    from shoal.run.metrics import MetricsLogger

    m = MetricsLogger(tmp_path, tensorboard=False)
    m.log({"env_steps": 1, "episode_return_mean": 1.0})
    m.log({"env_steps": 2, "episode_return_mean": 2.0, "loss": 0.5})
    m.close()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["env_steps"] for r in rows] == ["1", "2"] and rows[0]["loss"] == "" and rows[1]["loss"] == "0.5"
