"""Multi-seed experiments: `shoal train --seeds` in parallel, a failing or dying seed, `shoal plot` and `shoal report` of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from shoal.cli import main
from shoal.core.seeding import derive_seed
from shoal.errors import ConfigError
from shoal.run.experiments import load_experiment, run_experiment

ENV_DIR = Path(__file__).resolve().parents[1] / "custom_envs"
TINY = ["rollout_length=8", "eval_episodes=1", "max_restarts=0"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A 2-seed PPO experiment on CartPole, both seeds at once (one wave)."""
    folder = tmp_path_factory.mktemp("exp") / "ppo_cartpole"
    rc = main(["train", "ppo", "--env", "CartPole-v1", "--steps", "512", "--seeds", "0", "1", "--experiment",
               str(folder), "--parallel", "2", "eval_episodes=2"])
    assert rc == 0
    return folder


def test_seeds_run_each_in_its_own_directory_with_a_manifest(experiment):
    manifest = json.loads((experiment / "experiment.json").read_text())
    assert (manifest["algo"], manifest["env"], manifest["seeds"]) == ("ppo", "CartPole-v1", [0, 1])
    for s in (0, 1):
        run_dir = experiment / f"ppo_CartPole-v1_s{s}"
        assert manifest["runs"][str(s)] == run_dir.name
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert cfg["run"]["seed"] == s and cfg["run"]["steps"] == 512 and cfg["run"]["eval_episodes"] == 2
        ev = json.loads((run_dir / "eval.json").read_text())
        assert manifest["results"][str(s)] == {"status": "ok", "env_steps": 512, "eval_mean_return": ev["mean_return"],
                                               "eval_episodes": 2, "wall_time_s": manifest["results"][str(s)]["wall_time_s"]}
    # Different seeds are different runs (their first logged returns differ).
    firsts = {(experiment / f"ppo_CartPole-v1_s{s}" / "metrics.csv").read_text().splitlines()[1].split(",")[2]
              for s in (0, 1)}  # episode_return_mean of the first logged row
    assert len(firsts) == 2


def test_more_seeds_with_other_settings_are_refused(experiment):
    with pytest.raises(ConfigError, match="other settings") as e:
        run_experiment("ppo", "CartPole-v1", [2], experiment, steps=1024, overrides={"eval_episodes": 2})
    assert "\n" not in str(e.value)
    assert json.loads((experiment / "experiment.json").read_text())["seeds"] == [0, 1]  # nothing was added


def test_a_second_command_on_a_folder_in_use_is_refused(tmp_path):
    import fcntl
    import os

    from shoal.run.experiments import LOCK

    folder = tmp_path / "e"
    folder.mkdir()
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another command holds the folder
    try:
        with pytest.raises(ConfigError, match="another shoal train --seeds is running"):
            run_experiment("ppo", "CartPole-v1", [0], folder, steps=64)
    finally:
        os.close(fd)
    assert not (folder / "experiment.json").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"parallel": 0}, "--parallel must be >= 1"),
    ({"ray_address": "ray://head:10001"}, "--ray-address only applies with --backend ray"),
])
def test_job_options_that_cannot_apply_are_refused_before_the_manifest(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        run_experiment("ppo", "CartPole-v1", [0], tmp_path / "e", steps=64, **kwargs)
    assert not (tmp_path / "e").exists()


# --- plots and tables of a hand-written experiment: known curves and final returns -------------

def _write_experiment(folder: Path, finals: dict[int, float], failed: tuple[int, ...] = ()) -> None:
    """An experiment folder as `shoal train --seeds` writes it, with seed s's curve y = s + x / 100."""
    runs, results = {}, {}
    for s, final in finals.items():
        name = f"ppo_CartPole-v1_s{s}"
        d = folder / name
        d.mkdir(parents=True)
        rows = ["env_steps,episode_return_mean"] + [f"{x},{s + x / 100}" for x in range(0, 1001, 100)]
        (d / "metrics.csv").write_text("\n".join(rows) + "\n")
        (d / "eval.json").write_text(json.dumps({"mean_return": final, "episodes": 5}))
        runs[str(s)], results[str(s)] = name, {"status": "ok"}
    for s in failed:
        runs[str(s)], results[str(s)] = f"ppo_CartPole-v1_s{s}", {"status": "failed", "error": "RuntimeError: boom"}
    (folder / "experiment.json").write_text(json.dumps({"algo": "ppo", "env": "CartPole-v1",
                                                        "seeds": sorted([*finals, *failed]), "runs": runs,
                                                        "results": results}))


@pytest.fixture
def written(tmp_path):
    folder = tmp_path / "ppo_cartpole"
    _write_experiment(folder, {0: 100.0, 1: 300.0, 2: 200.0, 3: 500.0}, failed=(4,))
    return folder


def test_report_numbers_match_the_per_seed_final_returns_and_name_the_failed_seed(written, capsys):
    assert main(["report", str(written), "--json", "--reps", "500"]) == 0
    row = json.loads(capsys.readouterr().out)[str(written)]
    values = np.array([100.0, 300.0, 200.0, 500.0])
    assert row["seeds"] == 4 and row["listed"] == 5 and row["failed"] == {"4": "RuntimeError: boom"}
    assert row["returns"] == {"0": 100.0, "1": 300.0, "2": 200.0, "3": 500.0}
    assert row["mean"] == pytest.approx(275.0) and row["median"] == pytest.approx(250.0)
    assert row["iqm"] == pytest.approx(250.0)  # 4 seeds: the middle two, 200 and 300
    for stat in ("mean", "median", "iqm"):
        lo, hi = row[f"{stat}_ci"]
        assert values.min() <= lo <= row[stat] <= hi <= values.max()
    assert main(["report", str(written), "--reps", "500"]) == 0
    text = capsys.readouterr().out
    assert "275.00 [" in text and "IQM [95% CI]" in text
    assert f"{written}: 1 of 5 seeds failed or missing (4), not counted" in text


def test_plot_of_an_experiment_draws_a_band_and_its_legend_counts_failed_seeds(written, tmp_path):
    import matplotlib.image as mpimg

    from shoal.run.experiment_plots import experiment_legend

    assert experiment_legend(load_experiment(written)) == ("ppo on CartPole-v1 (ppo_cartpole), 4 seeds "
                                                         "(1 of 5 seeds failed or missing)")
    out = tmp_path / "exp.png"
    assert main(["plot", str(written), "--out", str(out)]) == 0
    img = mpimg.imread(out)
    assert img.shape[0] > 300 and img.shape[1] > 500
    # The band (seeds 0..3 are y = s + x/100: the mean's band is 1.5 +- up to 1.5 wide) is a
    # translucent fill of the line's colour: many pixels are neither white, grey nor the line.
    rgb = img[..., :3].reshape(-1, 3)
    light_blue = ((rgb[:, 2] > 0.7) & (rgb[:, 0] < 0.85) & (rgb[:, 0] > 0.5)).sum()
    assert light_blue > 2000


def test_a_seed_whose_run_directory_is_gone_is_counted_missing(written):
    import shutil

    shutil.rmtree(written / "ppo_CartPole-v1_s3")
    exp = load_experiment(written)
    assert sorted(exp.runs) == [0, 1, 2] and sorted(exp.failed) == [3, 4]
    assert exp.missing_note() == "2 of 5 seeds failed or missing"


# --- failing and dying seeds -----------------------------------------------------------------

def _crash_experiment(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ENV_DIR))  # spawned seed processes get this sys.path too
    doomed = derive_seed(1, "env", 0)  # seed 1's env copies are seeded doomed, doomed + 1
    monkeypatch.setenv("SHOAL_TEST_CRASH_SEEDS", f"{doomed},{doomed + 1}")
    folder = tmp_path / "exp"
    rc = main(["train", "ppo", "--env", "shoal_crash_envs:ShoalCrashingCorridor-v0", "--steps", "64", "--seeds", "0", "1",
               "--experiment", str(folder), "num_envs=2", *TINY])
    return folder, rc


def test_a_failing_seed_reports_its_error_exits_non_zero_and_the_others_keep_their_results(tmp_path, monkeypatch, capsys):
    folder, rc = _crash_experiment(tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert rc == 1
    manifest = json.loads((folder / "experiment.json").read_text())
    error = manifest["results"]["1"]["error"]
    assert manifest["results"]["1"]["status"] == "failed" and "RuntimeError: simulated env crash" in error
    assert f"seed 1 failed: {error}" in out and "1 of 2 seeds failed (1)" in out
    assert manifest["results"]["0"]["status"] == "ok"
    assert (folder / "ppo_ShoalCrashingCorridor-v0_s0" / "eval.json").exists()


def test_a_failed_seed_runs_again_in_the_same_experiment_and_a_finished_one_is_refused(tmp_path, monkeypatch):
    folder, _ = _crash_experiment(tmp_path, monkeypatch)
    monkeypatch.delenv("SHOAL_TEST_CRASH_SEEDS")
    env = "shoal_crash_envs:ShoalCrashingCorridor-v0"
    overrides = {"num_envs": 2, "rollout_length": 8, "eval_episodes": 1, "max_restarts": 0}
    with pytest.raises(ConfigError, match="already has results for seeds 0"):
        run_experiment("ppo", env, [0, 1], folder, steps=64, overrides=overrides)
    again = run_experiment("ppo", env, [1], folder, steps=64, overrides=overrides)
    assert {s: r["status"] for s, r in again["results"].items()} == {"0": "ok", "1": "ok"} and again["seeds"] == [0, 1]
    assert (folder / "ppo_ShoalCrashingCorridor-v0_s1" / "eval.json").exists()
    assert list(folder.glob("ppo_ShoalCrashingCorridor-v0_s1.failed-*"))  # the failed attempt is kept aside


def test_a_seed_whose_process_dies_fails_alone(tmp_path, monkeypatch, capsys):
    # The env calls os._exit in seed 1's process (as an out-of-memory kill would): no exception
    # reaches anyone, and seed 0, running beside it, still ends ok.
    monkeypatch.syspath_prepend(str(ENV_DIR))
    monkeypatch.setenv("SHOAL_TEST_EXIT_SEEDS", str(derive_seed(1, "env", 0)))
    folder = tmp_path / "exp"
    rc = main(["train", "ppo", "--env", "shoal_exit_envs:ShoalExitingCorridor-v0", "--steps", "64", "--seeds", "0", "1",
               "--experiment", str(folder), "--parallel", "2", "num_envs=1", "vector=sync", *TINY])
    assert rc == 1
    results = json.loads((folder / "experiment.json").read_text())["results"]
    assert results["0"]["status"] == "ok" and results["0"]["env_steps"] == 64
    assert results["1"] == {"status": "failed", "error": "the job's process died (exit code 3: killed, out of memory, "
                                                         "or exited)"}


def test_run_jobs_fails_only_the_job_whose_process_died(monkeypatch):
    monkeypatch.syspath_prepend(str(ENV_DIR))
    from shoal_exit_envs import raise_for_two, square_or_exit

    from shoal.run.parallel import run_jobs

    out = {i: (r, e) for i, r, e in run_jobs(square_or_exit, [(0,), (1,), (2,), (3,)], max_parallel=2)}
    assert {i: r for i, (r, _) in out.items()} == {0: 0, 1: None, 2: 4, 3: 9}
    assert "exit code 3" in str(out[1][1]) and all(out[i][1] is None for i in (0, 2, 3))
    raised = dict((i, e) for i, _, e in run_jobs(raise_for_two, [(0,), (2,)], max_parallel=2))
    assert raised[0] is None and isinstance(raised[1], ValueError) and str(raised[1]) == "two is refused"


def test_seeds_are_checked_before_any_process_starts(tmp_path):
    with pytest.raises(ConfigError, match="lists a seed twice"):
        run_experiment("ppo", "CartPole-v1", [0, 0], tmp_path / "e")
    with pytest.raises(ConfigError, match="unknown config key"):
        run_experiment("ppo", "CartPole-v1", [0, 1], tmp_path / "e", overrides={"lrr": 0.1})
    assert not (tmp_path / "e").exists()


@pytest.mark.ray
def test_run_tasks_yields_each_result_and_each_error_by_index():
    from shoal.backends.ray import run_tasks

    out = {i: (r, e) for i, r, e in run_tasks(json.loads, [("[1, 2]",), ("{bad",), ("3",)], max_parallel=2)}
    assert out[0] == ([1, 2], None) and out[2] == (3, None)
    assert out[1][0] is None and isinstance(out[1][1], json.JSONDecodeError)


@pytest.mark.ray
def test_seeds_run_as_ray_tasks_with_backend_ray(tmp_path):
    manifest = run_experiment("ppo", "CartPole-v1", [3, 4], tmp_path / "e", jobs="ray", steps=64,
                              overrides={"eval_episodes": 1, "rollout_length": 8})
    assert manifest["jobs"] == "ray"
    assert {s: r["status"] for s, r in manifest["results"].items()} == {"3": "ok", "4": "ok"}
    for s in (3, 4):
        cfg = yaml.safe_load((tmp_path / "e" / f"ppo_CartPole-v1_s{s}" / "config.yaml").read_text())
        assert cfg["run"]["seed"] == s and cfg["run"]["backend"] == "inprocess"


def test_cuda_jobs_on_ray_request_a_share_of_a_gpu_and_cpu_jobs_none():
    from shoal.run.parallel import gpus_per_job

    assert gpus_per_job("cuda", 4) == 0.25 and gpus_per_job("cuda:0", 1) == 1.0
    assert gpus_per_job("cpu", 4) == 0.0 and gpus_per_job("auto", 2) == 0.0


@pytest.mark.ray
def test_a_ray_job_asking_for_a_gpu_on_a_cluster_without_one_is_a_clear_error(tmp_path):
    import ray

    if ray.cluster_resources().get("GPU"):
        pytest.skip("this Ray cluster has a GPU")
    with pytest.raises(ConfigError, match="device='cuda' but the Ray cluster has no GPU"):
        run_experiment("ppo", "CartPole-v1", [0], tmp_path / "e", jobs="ray", steps=64, overrides={"device": "cuda"})
