"""Every user error: one line on stderr, non-zero exit, no traceback, nothing half-written."""

import re
import subprocess
import sys

import pytest


def shoal(*args, cwd):
    return subprocess.run([sys.executable, "-m", "shoal.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("args,needle", [
    (["train", "ppoo", "--env", "CartPole-v1"], "unknown algorithm 'ppoo'; did you mean 'ppo'?"),
    (["train", "ppo", "--env", "CartPol-v1"], "unknown environment id 'CartPol-v1'; did you mean 'CartPole-v1'?"),
    (["train", "ppo", "--env", "CartPole-v1", "lr=-0.1"], "lr must be > 0"),
    (["train", "ppo", "--env", "CartPole-v1", "epochs=many"], "epochs='many' must be an integer"),
    (["train", "ppo", "--env", "CartPole-v1", "learning_rate=0.1"], "unknown config key 'learning_rate'"),
    (["train", "ppo", "--env", "CartPole-v1", "--config", "missing.yaml"], "cannot read config file 'missing.yaml'"),
    (["train", "--resume", "nowhere"], "cannot resume 'nowhere'"),
    (["train", "ppo", "--env", "no_such_pkg_xyz:Foo-v0"], "names module 'no_such_pkg_xyz', which cannot be imported"),
    (["eval", "nowhere"], "has no config.yaml"),
])
def test_user_errors_are_one_line(tmp_path, args, needle):
    if args[0] == "train" and "--resume" not in args:
        p = shoal(*args, "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    else:
        p = shoal(*args, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "run").exists()


def test_unreadable_yaml_config(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: [0.1,\n")
    p = shoal("train", "ppo", "--env", "CartPole-v1", "--config", "c.yaml", "--run-dir", "run", cwd=tmp_path)
    assert p.returncode == 2 and "not valid YAML" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "run").exists()


def test_env_returning_nan_mid_run_leaves_no_run_dir(tmp_path):
    code = (
        "import gymnasium as gym, numpy as np, shoal\n"
        "class Bad(gym.Env):\n"
        "    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)\n"
        "    action_space = gym.spaces.Discrete(2)\n"
        "    def reset(self, *, seed=None, options=None):\n"
        "        super().reset(seed=seed); self.t = 0; return np.zeros(2, np.float32), {}\n"
        "    def step(self, a):\n"
        "        self.t += 1; o = np.zeros(2, np.float32)\n"
        "        if self.t == 5: o[0] = np.nan\n"
        "        return o, 1.0, False, self.t >= 100, {}\n"
        "try:\n"
        "    shoal.train('ppo', Bad, steps=5000, run_dir='run', quiet=True)\n"
        "except shoal.errors.ShoalError as e:\n"
        "    print('ERR', e)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    # The env is made anew after each NaN (on_nonfinite=skip) until max_restarts, then one error names it and the
    # step; it fails before the first checkpoint, so nothing is left to resume.
    assert re.search(r"ERR actor 0: env Bad raised 4 times \(last at step \d+: .*env 'Bad' returned a non-finite "
                     r"observation .*max_restarts \(now 3\)", p.stdout), p.stdout + p.stderr
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint_on_eval_and_resume(tmp_path):
    p = shoal("train", "ppo", "--env", "CartPole-v1", "--steps", "2048", "--run-dir", "run", "--quiet",
              "checkpoint_every=1024", "eval_episodes=2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("*.safetensors"))
    assert len(ckpts) == 2
    for ckpt in ckpts:  # every checkpoint corrupt: nothing to fall back to
        data = bytearray(ckpt.read_bytes())
        data[len(data) // 2] ^= 0xFF
        ckpt.write_bytes(bytes(data))
    for args in (["eval", "run"], ["train", "--resume", "run"]):
        p = shoal(*args, cwd=tmp_path)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        *warned, error = p.stderr.strip().splitlines()
        assert error.startswith("shoal: error: no usable checkpoint") and "corrupt" in error, p.stderr
        # one warning line per checkpoint passed over, naming it
        assert len(warned) == 2 and all(w.startswith("shoal: warning:") for w in warned), p.stderr
        assert ckpts[1].name in warned[0] and ckpts[0].name in warned[1]


def test_existing_run_dir_is_not_overwritten(tmp_path):
    p = shoal("train", "ppo", "--env", "CartPole-v1", "--steps", "512", "--run-dir", "run", "--quiet", "eval_episodes=1", cwd=tmp_path)
    assert p.returncode == 0
    run = tmp_path / "run"
    for name in ("config.yaml", "run.json", "metrics.csv", "eval.json"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard events"
    assert list((run / "checkpoints").glob("ckpt-*.safetensors"))
    assert not [p for p in run.rglob("*.tmp")], "temp files left behind"
    before = (run / "metrics.csv").read_text()
    p = shoal("train", "ppo", "--env", "CartPole-v1", "--steps", "512", "--run-dir", "run", "--quiet", cwd=tmp_path)
    assert p.returncode == 2 and "already holds a run" in p.stderr
    assert (tmp_path / "run" / "metrics.csv").read_text() == before
