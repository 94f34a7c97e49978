"""Multi-seed experiments: `shoal train --seeds` in parallel, a failing seed, `shoal plot` and `shoal report` of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from shoal.cli import main
from shoal.core.seeding import derive_seed
from shoal.errors import ConfigError
from shoal.run.experiments import run_experiment

ENV_DIR = Path(__file__).resolve().parents[1] / "custom_envs"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A 3-seed PPO experiment on CartPole, two seeds at a time."""
    folder = tmp_path_factory.mktemp("exp") / "ppo_cartpole"
    rc = main(["train", "ppo", "--env", "CartPole-v1", "--steps", "1024", "--seeds", "0", "1", "2", "--experiment",
               str(folder), "--parallel", "2", "eval_episodes=3"])
    assert rc == 0
    return folder


def _finals(folder: Path) -> dict[int, float]:
    out = {}
    for d in sorted(folder.iterdir()):
        if (d / "eval.json").exists():
            out[yaml.safe_load((d / "config.yaml").read_text())["run"]["seed"]] = json.loads((d / "eval.json").read_text())["mean_return"]
    return out


def test_seeds_run_each_in_its_own_directory_with_a_manifest(experiment):
    manifest = json.loads((experiment / "experiment.json").read_text())
    assert (manifest["algo"], manifest["env"], manifest["seeds"]) == ("ppo", "CartPole-v1", [0, 1, 2])
    for s in (0, 1, 2):
        run_dir = experiment / f"ppo_CartPole-v1_s{s}"
        assert manifest["runs"][str(s)] == run_dir.name
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert cfg["run"]["seed"] == s and cfg["run"]["steps"] == 1024 and cfg["run"]["eval_episodes"] == 3
        ev = json.loads((run_dir / "eval.json").read_text())
        assert manifest["results"][str(s)] == {"status": "ok", "env_steps": 1024, "eval_mean_return": ev["mean_return"],
                                               "eval_episodes": 3, "wall_time_s": manifest["results"][str(s)]["wall_time_s"]}
    # Different seeds are different runs (their first logged returns differ).
    firsts = {(experiment / f"ppo_CartPole-v1_s{s}" / "metrics.csv").read_text().splitlines()[3] for s in (0, 1, 2)}
    assert len(firsts) == 3


def test_plot_of_an_experiment_draws_a_band(experiment, tmp_path, capsys):
    import matplotlib.image as mpimg

    out = tmp_path / "exp.png"
    assert main(["plot", str(experiment), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    img = mpimg.imread(out)
    assert img.shape[0] > 300 and img.shape[1] > 500
    # The band is a translucent fill of the line's colour: many pixels are neither white, grey nor the line.
    rgb = img[..., :3].reshape(-1, 3)
    light_blue = ((rgb[:, 2] > 0.7) & (rgb[:, 0] < 0.85) & (rgb[:, 0] > 0.5)).sum()
    assert light_blue > 2000


def test_report_numbers_match_the_per_seed_final_returns(experiment, capsys):
    from rliable import metrics

    finals = _finals(experiment)
    assert sorted(finals) == [0, 1, 2]
    assert main(["report", str(experiment), "--json", "--reps", "500"]) == 0
    table = json.loads(capsys.readouterr().out)
    row = table[str(experiment)]
    values = np.array([finals[s] for s in (0, 1, 2)])
    assert row["seeds"] == 3
    assert row["returns"] == {str(s): finals[s] for s in (0, 1, 2)}
    assert row["mean"] == pytest.approx(values.mean())
    assert row["median"] == pytest.approx(np.median(values))
    assert row["iqm"] == pytest.approx(metrics.aggregate_iqm(values.reshape(-1, 1)))
    for stat in ("mean", "median", "iqm"):
        lo, hi = row[f"{stat}_ci"]
        assert values.min() - 1e-9 <= lo <= row[stat] <= hi <= values.max() + 1e-9
    assert main(["report", str(experiment), "--reps", "500"]) == 0
    text = capsys.readouterr().out
    assert f"{values.mean():.2f} [" in text and "IQM [95% CI]" in text


def test_a_failing_seed_reports_its_error_exits_non_zero_and_the_others_keep_their_results(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ENV_DIR))  # spawned seed processes get this sys.path too
    num_envs = 2
    doomed = derive_seed(1, "env", 0)  # seed 1's env copies are seeded doomed, doomed + 1
    monkeypatch.setenv("SHOAL_TEST_CRASH_SEEDS", ",".join(str(doomed + i) for i in range(num_envs)))
    folder = tmp_path / "exp"
    rc = main(["train", "ppo", "--env", "shoal_crash_envs:ShoalCrashingCorridor-v0", "--steps", "256", "--seeds", "0", "1",
               "--experiment", str(folder), f"num_envs={num_envs}", "rollout_length=16", "eval_episodes=2", "max_restarts=0"])
    out = capsys.readouterr().out
    assert rc == 1
    manifest = json.loads((folder / "experiment.json").read_text())
    error = manifest["results"]["1"]["error"]
    assert manifest["results"]["1"]["status"] == "failed" and "RuntimeError: simulated env crash" in error
    assert f"seed 1 failed: {error}" in out and "1 of 2 seeds failed (1)" in out
    assert manifest["results"]["0"]["status"] == "ok"
    assert (folder / "ppo_ShoalCrashingCorridor-v0_s0" / "eval.json").exists()
    # The report covers the seeds that finished.
    assert main(["report", str(folder), "--json", "--reps", "200"]) == 0
    assert json.loads(capsys.readouterr().out)[str(folder)]["seeds"] == 1
    # Without the fault, the failed seed runs again in the same experiment; a finished one is refused.
    monkeypatch.delenv("SHOAL_TEST_CRASH_SEEDS")
    with pytest.raises(ConfigError, match="already has results for seeds 0"):
        run_experiment("ppo", "shoal_crash_envs:ShoalCrashingCorridor-v0", [0, 1], folder)
    again = run_experiment("ppo", "shoal_crash_envs:ShoalCrashingCorridor-v0", [1], folder, steps=256,
                           overrides={"num_envs": num_envs, "rollout_length": 16, "eval_episodes": 2, "max_restarts": 0})
    assert {s: r["status"] for s, r in again["results"].items()} == {"0": "ok", "1": "ok"} and again["seeds"] == [0, 1]
    assert (folder / "ppo_ShoalCrashingCorridor-v0_s1" / "eval.json").exists()


def test_seeds_are_checked_before_any_process_starts(tmp_path):
    with pytest.raises(ConfigError, match="lists a seed twice"):
        run_experiment("ppo", "CartPole-v1", [0, 0], tmp_path / "e")
    with pytest.raises(ConfigError, match="unknown config key"):
        run_experiment("ppo", "CartPole-v1", [0, 1], tmp_path / "e", overrides={"lrr": 0.1})
    assert not (tmp_path / "e").exists()


@pytest.mark.ray
def test_seeds_run_as_ray_tasks_with_backend_ray(tmp_path):
    manifest = run_experiment("ppo", "CartPole-v1", [3, 4], tmp_path / "e", jobs="ray", steps=256,
                              overrides={"eval_episodes": 1})
    assert manifest["jobs"] == "ray"
    assert {s: r["status"] for s, r in manifest["results"].items()} == {"3": "ok", "4": "ok"}
    for s in (3, 4):
        cfg = yaml.safe_load((tmp_path / "e" / f"ppo_CartPole-v1_s{s}" / "config.yaml").read_text())
        assert cfg["run"]["seed"] == s and cfg["run"]["backend"] == "inprocess"
