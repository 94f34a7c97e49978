"""Custom envs in Gymnasium's ``module:EnvId`` form reach every entry point: train, eval, Ray workers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import shoal
from shoal.envs.ids import bare_env_id, env_module_source, split_env_id
from shoal.envs.make import check_env_id, make_vec_env
from shoal.errors import EnvError
from shoal.run.resolve import defaults_note, resolve

ENV_DIR = Path(__file__).resolve().parents[1] / "custom_envs"
CUSTOM = "shoal_custom_envs:ShoalCorridor-v0"


def _cli(*args: str, cwd: Path, pythonpath: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = str(ENV_DIR)
    return subprocess.run([sys.executable, "-m", "shoal.cli", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


@pytest.fixture
def on_path(monkeypatch):
    """The test env package importable in this process only (sys.path, not PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(ENV_DIR))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    yield


def test_env_id_forms():
    assert split_env_id("mypkg.envs:MyEnv-v0") == ("mypkg.envs", "MyEnv-v0")
    assert split_env_id("shoal/CartPole-v1") == (None, "shoal/CartPole-v1")
    assert bare_env_id("a.b:ns/X-v1") == "ns/X-v1"
    # Gymnasium's own form for a module that registers ids: the bare id comes back.
    assert check_env_id("gymnasium.envs.classic_control:CartPole-v1") == "CartPole-v1"


def test_module_form_uses_per_env_defaults_and_the_batched_twin():
    gid = "gymnasium.envs.classic_control:CartPole-v1"
    assert defaults_note("ppo", gid).startswith("defaults for CartPole-v1 from shoal/configs/ppo.yaml: steps=50000")
    r = resolve("ppo", gid, gid, None, {}, {})
    assert r.agent.num_envs == 8 and r.run.steps == 50000  # the CartPole-v1 entry, not generic defaults
    venv = make_vec_env(gid, 2, seed=0)
    try:
        assert type(venv.env).__name__ == "BatchedCartPole"
    finally:
        venv.close()


def test_module_that_cannot_be_imported_or_registers_nothing(on_path):
    with pytest.raises(EnvError, match="names module 'no_such_pkg_xyz', which cannot be imported"):
        check_env_id("no_such_pkg_xyz:Foo-v0")
    with pytest.raises(EnvError, match="importing 'shoal_registers_nothing' did not register 'Foo-v0'"):
        check_env_id("shoal_registers_nothing:Foo-v0")
    with pytest.raises(EnvError, match="not of the form module:EnvId"):
        check_env_id("shoal_custom_envs:")


def test_local_module_is_shipped_installed_ones_are_not(on_path):
    assert env_module_source(CUSTOM) == str(ENV_DIR / "shoal_custom_envs.py")
    assert env_module_source("gymnasium.envs.classic_control:CartPole-v1") is None  # installed on every node
    assert env_module_source("CartPole-v1") is None
    assert env_module_source("shoal.envs.toy:shoal/GridMaze-v0") is None


def test_python_api_in_process(on_path, tmp_path):
    r = shoal.train("ppo", CUSTOM, steps=512, run_dir=tmp_path / "run", quiet=True, tensorboard=False,
                    overrides={"eval_episodes": 2, "num_envs": 2, "rollout_length": 64, "eval_env": CUSTOM})
    assert r.env_steps >= 512 and r.eval["episodes"] == 2
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["env"] == CUSTOM


def test_cli_train_then_eval_in_fresh_processes(tmp_path):
    p = _cli("train", "ppo", "--env", CUSTOM, "--steps", "512", "--run-dir", "run", "num_envs=2", "rollout_length=64",
             "eval_episodes=2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "no per-env defaults for ShoalCorridor-v0 in shoal/configs/ppo.yaml" in p.stdout
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["episodes"] == 2
    p = _cli("eval", "run", "--episodes", "3", cwd=tmp_path)
    assert p.returncode == 0 and "over 3 episodes" in p.stdout, p.stderr[-3000:]


def test_shoal_command_imports_the_module_from_the_current_folder(tmp_path):
    exe = shutil.which("shoal") or str(Path(sys.executable).parent / "shoal")
    if not Path(exe).exists():
        pytest.skip("the shoal console script is not installed")
    shutil.copy(ENV_DIR / "shoal_custom_envs.py", tmp_path / "shoal_custom_envs.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([exe, "train", "ppo", "--env", CUSTOM, "--steps", "256", "--run-dir", "run", "--quiet", "num_envs=2",
                        "rollout_length=64", "eval_episodes=1"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]


def test_cli_unimportable_module_is_one_line(tmp_path):
    p = _cli("train", "ppo", "--env", CUSTOM, "--run-dir", "run", cwd=tmp_path, pythonpath=False)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "names module 'shoal_custom_envs', which cannot be imported" in lines[0], p.stderr
    assert not (tmp_path / "run").exists()


_RAY_DRIVER = """
import json, sys
sys.path.insert(0, {env_dir!r})  # this driver's sys.path only: not PYTHONPATH, not its cwd
import shoal
r = shoal.train("ppo", {env!r}, steps=1024, backend="ray", num_actors=2, run_dir="run", quiet=True, tensorboard=False,
                overrides={{"eval_episodes": 2, "num_envs": 2, "rollout_length": 64}})
print(json.dumps({{"steps": r.env_steps, "episodes": r.eval["episodes"]}}))
"""


@pytest.mark.ray
def test_ray_workers_import_a_module_only_the_driver_can_see(tmp_path):
    # shoal starts its own Ray and ships the module with the job (runtime_env py_modules):
    # without that the actor nodes die with "cannot be imported in this process".
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-c", _RAY_DRIVER.format(env_dir=str(ENV_DIR), env=CUSTOM)], capture_output=True,
                       text=True, cwd=tmp_path, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["steps"] >= 1024 and out["episodes"] == 2
    assert len(json.loads((tmp_path / "run" / "run.json").read_text())["actor_seeds"]) == 2


@pytest.mark.ray
def test_a_ray_started_by_the_caller_gets_the_module_too(on_path, tmp_path):
    import ray

    assert ray.is_initialized()  # the session's Ray (tests/conftest.py), started without this module
    r = shoal.train("ppo", CUSTOM, steps=1024, backend="ray", num_actors=2, run_dir=tmp_path / "run", quiet=True,
                    tensorboard=False, overrides={"eval_episodes": 2, "num_envs": 2, "rollout_length": 64})
    assert r.env_steps >= 1024 and r.eval["episodes"] == 2
