"""A user-started Ray cluster on loopback: shoal connects to it with its token, trains, and it is stopped."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.ray


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path):
    ray_bin = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    port = _free_port()
    home = tmp_path / "home"  # Ray writes its token under $HOME/.ray; keep it inside the test
    home.mkdir()
    # Without the session's own Ray token (this process's private instance put it in os.environ): the
    # cluster makes its own, and the clients must find that one.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}, "HOME": str(home),
           "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="shoal-ray-")  # short: Ray's socket paths must fit in 107 bytes
    gen = subprocess.run([ray_bin, "get-auth-token", "--generate"], capture_output=True, text=True, env=env, timeout=120)
    assert gen.returncode == 0, gen.stderr[-2000:]
    start = subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
                            "--num-cpus=3", "--include-dashboard=false", "--disable-usage-stats"],
                           capture_output=True, text=True, env=env, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        _stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_cluster(temp: str) -> None:
    """Stop this cluster's processes only. ``ray stop`` would stop every Ray instance on the machine,
    the test session's own included (and its driver, this process, with it)."""
    import psutil

    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp in arg for arg in proc.info["cmdline"] or ()):
                procs.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=20)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.slow  # starts and stops a cluster of its own: 45 s here
@pytest.mark.timeout(300)
def test_train_through_user_started_cluster(tmp_path, ray_cluster):
    address, env = ray_cluster
    token_file = os.path.join(env["HOME"], ".ray", "auth_token")
    assert os.path.exists(token_file), "ray start did not create a token: authentication is off"
    cmd = [sys.executable, "-m", "shoal.cli", "train", "ppo", "--env", "CartPole-v1", "--steps", "1024", "--backend", "ray",
           "--num-actors", "2", "--ray-address", address, "--run-dir", str(tmp_path / "run"), "--quiet", "eval_episodes=2"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "run" / "eval.json").exists()

    # Without the token the connection is refused, and the message says what to set.
    stranger = {**env, "HOME": str(tmp_path)}
    p = subprocess.run(cmd[:-4] + ["--run-dir", str(tmp_path / "run2"), "--quiet"], capture_output=True, text=True,
                       env=stranger, timeout=300)
    assert p.returncode == 2
    assert "RAY_AUTH_TOKEN" in p.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run2").exists()
