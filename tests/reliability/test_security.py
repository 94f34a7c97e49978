"""Nothing from a file or the command line runs code, and shoal's private Ray refuses clients without its token."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import shoal
import shoal.errors


def shoal_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shoal.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


class _Payload:
    """Unpickling this would create ``marker``: what a crafted checkpoint would do if it were unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_yaml_config_with_a_python_tag_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.yaml").write_text(f'lr: !!python/object/apply:os.system ["touch {marker}"]\n')
    p = shoal_cli("train", "ppo", "--env", "CartPole-v1", "--config", "evil.yaml", "--run-dir", "run", cwd=tmp_path)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert "!!python/object/apply:os.system" in lines[0] and "refuses" in lines[0], lines[0]
    assert "not valid YAML" not in lines[0]
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_an_override_with_a_python_tag_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    p = shoal_cli("train", "ppo", "--env", "CartPole-v1", "--run-dir", "run",
                  f'lr=!!python/object/apply:os.system ["touch {marker}"]', cwd=tmp_path)
    assert p.returncode == 2 and "refuses" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_pickle_payload_in_place_of_a_checkpoint_is_refused_and_never_unpickled(tmp_path):
    p = shoal_cli("train", "ppo", "--env", "CartPole-v1", "--steps", "512", "--run-dir", "run", "--quiet",
                  "eval_episodes=1", "checkpoint_every=512", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("ckpt-*.json"))
    assert len(ckpts) == 1
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    weights = ckpts[0].with_suffix(".safetensors")
    weights.write_bytes(payload)
    # The attacker controls the JSON too: its checksum matches the payload, so only the format protects.
    doc = json.loads(ckpts[0].read_text())
    doc["sha256"] = hashlib.sha256(payload).hexdigest()
    ckpts[0].write_text(json.dumps(doc))
    for args in (["eval", "run"], ["train", "--resume", "run"]):
        p = shoal_cli(*args, cwd=tmp_path)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert "unreadable" in p.stderr or "corrupt" in p.stderr, p.stderr
        assert not marker.exists()
    # A pickle in place of the JSON is refused the same way.
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("ckpt-*.json*"))
    ckpts[0].write_bytes(payload)
    ckpts[0].rename(ckpts[0].with_name(ckpts[0].name.removesuffix(".corrupt")))
    p = shoal_cli("eval", "run", cwd=tmp_path)
    assert p.returncode == 2 and "corrupt" in p.stderr and not marker.exists(), p.stderr


def test_env_ids_and_paths_from_the_command_line_never_reach_a_shell(tmp_path):
    marker = tmp_path / "pwned"
    p = shoal_cli("train", "ppo", "--env", f"CartPole-v1; touch {marker}", "--run-dir", "run", cwd=tmp_path)
    assert p.returncode == 2 and not marker.exists()
    p = shoal_cli("eval", f"$(touch {marker})", cwd=tmp_path)
    assert p.returncode == 2 and not marker.exists()
    # No module of shoal hands a string to a shell.
    shells = {"system", "popen", "getoutput", "getstatusoutput", "create_subprocess_shell", "spawn", "execl", "execlp"}
    root = Path(shoal.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("os", "pty", "asyncio", "subprocess", "commands"):
                named = {a.name for a in node.names} & shells
                assert not named, f"{path}: from {node.module} import {named}"
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                assert name.rsplit(".", 1)[-1] not in shells or not name.startswith(("os.", "pty.", "asyncio.", "subprocess.")), \
                    f"{path}: {name}"
                for kw in node.keywords:
                    assert not (kw.arg == "shell" and ast.unparse(kw.value) != "False"), f"{path}: shell={ast.unparse(kw.value)}"
                    if kw.arg is None and name.startswith("subprocess."):  # **kwargs could carry shell=True
                        raise AssertionError(f"{path}: {name}(**...) hides its keywords")


_CLIENT = (
    "import sys, ray\n"
    "try:\n"
    "    ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
    "    print('CONNECTED', int(ray.cluster_resources().get('CPU', 0)))\n"
    "except Exception as e:\n"
    "    print('REFUSED', type(e).__name__)\n"
)


def test_a_run_directory_config_with_a_python_tag_is_refused_on_eval_and_resume(tmp_path):
    p = shoal_cli("train", "ppo", "--env", "CartPole-v1", "--steps", "256", "--run-dir", "run", "--quiet",
                  "eval_episodes=1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    marker = tmp_path / "pwned"
    cfg = tmp_path / "run" / "config.yaml"
    cfg.write_text(cfg.read_text() + f'extra: !!python/object/apply:os.system ["touch {marker}"]\n')
    for args in (["eval", "run"], ["train", "--resume", "run"]):
        p = shoal_cli(*args, cwd=tmp_path)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert p.returncode == 2 and len(lines) == 1 and "refuses" in lines[0], p.stderr
        assert not marker.exists()


def test_a_crafted_checkpoint_cannot_name_files_outside_its_folder(tmp_path):
    import torch

    from shoal.io.checkpoint import Detachable, delete_checkpoint, drop_detached, load_checkpoint, save_checkpoint

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = tmp_path / "checkpoints"
    path = save_checkpoint(folder / "ckpt-000000000001", {"w": torch.ones(2), "replay": Detachable({"x": torch.ones(3)})})
    doc = json.loads(path.read_text())
    doc["detached"]["weights"] = str(victim)
    doc["weights"] = "../victim.txt"
    path.write_text(json.dumps(doc))
    with pytest.raises(shoal.errors.CheckpointError, match="outside its folder"):
        load_checkpoint(path)
    with pytest.raises(shoal.errors.CheckpointError):
        drop_detached(path)
    delete_checkpoint(path)
    assert victim.read_text() == "keep me"


@pytest.mark.ray
def test_the_private_ray_instance_refuses_a_client_without_its_token(tmp_path):
    import ray

    address = ray.get_runtime_context().gcs_address
    assert os.environ.get("RAY_AUTH_MODE") == "token" and len(os.environ.get("RAY_AUTH_TOKEN", "")) >= 32
    home = tmp_path / "home"
    home.mkdir()  # no ~/.ray/auth_token there
    bare = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    bare["HOME"] = str(home)

    def start(env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _CLIENT, address], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)

    def answer(proc: subprocess.Popen) -> str:
        out, err = proc.communicate(timeout=100)
        last = out.strip().splitlines()[-1] if out.strip() else err[-500:]
        if last.startswith("REFUSED"):  # refused for its token, not for any other reason
            assert "InvalidAuthToken" in err or "Unauthenticated" in err, err[-1000:]
        return last

    # Both refusals wait out Ray's connection retries (about 20 s): run them side by side.
    no_token, wrong_token = start(bare), start(dict(bare, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64))
    assert answer(no_token).startswith("REFUSED"), "a client without the token connected"
    assert answer(wrong_token).startswith("REFUSED"), "a client with a wrong token connected"
    with_token = dict(bare, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=os.environ["RAY_AUTH_TOKEN"])
    assert answer(start(with_token)) == "CONNECTED 24"  # the same client with the token is let in: the token is the lock


@pytest.mark.ray
def test_the_private_ray_instance_runs_no_dashboard():
    import ray

    ctx = ray.get_runtime_context()
    assert ray._private.worker.global_worker.node.address_info.get("webui_url") in (None, "")
    assert ctx.gcs_address
