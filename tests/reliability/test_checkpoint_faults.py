"""A corrupt newest checkpoint falls back to the previous good one; a failing write loses nothing."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import shoal
from shoal.errors import CheckpointError
from shoal.io.checkpoint import list_checkpoints, load_checkpoint, load_newest_checkpoint, save_checkpoint


def shoal_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shoal.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_the_newest_loadable_checkpoint_is_chosen_with_a_warning_naming_the_bad_one(tmp_path):
    import torch

    for step in (1, 2, 3):
        save_checkpoint(tmp_path / f"ckpt-{step:012d}", {"w": torch.full((4,), float(step))}, meta={"env_steps": step})
    _flip_a_byte(tmp_path / "ckpt-000000000003.safetensors")
    (tmp_path / "ckpt-000000000002.safetensors").write_bytes(b"")  # truncated to nothing
    with pytest.warns(UserWarning) as caught:
        path, tree, meta = load_newest_checkpoint(tmp_path)
    assert path.name == "ckpt-000000000001.json" and meta["env_steps"] == 1 and float(tree["w"][0]) == 1.0
    texts = [str(w.message) for w in caught]
    assert "ckpt-000000000003.safetensors" in texts[0] and "falling back to ckpt-000000000002.json" in texts[0]
    assert "ckpt-000000000002.safetensors" in texts[1] and "falling back to ckpt-000000000001.json" in texts[1]
    assert len(list_checkpoints(tmp_path)) == 3  # read-only unless asked to quarantine
    with pytest.warns(UserWarning):
        load_newest_checkpoint(tmp_path, quarantine=True)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000000000001.json"]
    kept = sorted(p.name.split(".")[0] for p in (tmp_path / "corrupt").iterdir())
    assert kept == ["ckpt-000000000002", "ckpt-000000000003"]  # set aside with all their files
    _flip_a_byte(tmp_path / "ckpt-000000000001.safetensors")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no usable checkpoint"):
        load_newest_checkpoint(tmp_path)


def test_eval_and_resume_fall_back_to_the_previous_checkpoint_when_the_newest_is_corrupt(tmp_path):
    p = shoal_cli("train", "ppo", "--env", "CartPole-v1", "--steps", "2048", "--run-dir", "run", "--quiet",
                  "checkpoint_every=512", "eval_episodes=2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert len(ckpts) == 3
    newest, previous = ckpts[-1], ckpts[-2]
    _flip_a_byte(newest.with_suffix(".safetensors"))
    p = shoal_cli("eval", "run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert newest.with_suffix(".safetensors").name in p.stderr and previous.name in p.stderr, p.stderr
    p = shoal_cli("train", "--resume", "run", "--steps", "2560", "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert newest.with_suffix(".safetensors").name in p.stderr and "falling back" in p.stderr
    # The run went on from the previous checkpoint's step and wrote new, good checkpoints.
    _, meta = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    assert meta["env_steps"] == 2560
    (kept,) = (tmp_path / "run" / "checkpoints" / "corrupt").iterdir()
    assert kept.name.startswith(newest.stem) and (kept / newest.name).exists()


def _failing_save(after: int):
    """A save_checkpoint whose tensor writes fail with ENOSPC after ``after`` successful checkpoints."""
    import shoal.io.checkpoint as ck

    real = ck.save_file
    calls = {"n": 0}

    def save_file(tensors, path, *a, **k):
        calls["n"] += 1
        if calls["n"] > after:
            Path(path).write_bytes(b"\0" * 100)  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *a, **k)

    return save_file


@pytest.mark.parametrize("mode", ["stop", "continue"])
def test_a_checkpoint_write_that_fails_leaves_the_previous_one_intact(tmp_path, monkeypatch, mode):
    import shoal.io.checkpoint as ck

    monkeypatch.setattr(ck, "save_file", _failing_save(after=1))
    run_dir = tmp_path / "run"
    kwargs = dict(steps=2048, run_dir=str(run_dir), quiet=True, overrides={"checkpoint_every": 512, "eval_episodes": 1,
                                                                           "on_checkpoint_error": mode})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if mode == "stop":
            with pytest.raises(CheckpointError, match="could not write checkpoint ckpt-000000001024.*No space left"):
                shoal.train("ppo", "CartPole-v1", **kwargs)
        else:
            run = shoal.train("ppo", "CartPole-v1", **kwargs)
            assert run.env_steps == 2048
    ckpts = list_checkpoints(run_dir / "checkpoints")
    assert [p.name for p in ckpts] == ["ckpt-000000000512.json"]
    _, meta = load_checkpoint(ckpts[0])  # intact: its checksum holds
    assert meta["env_steps"] == 512
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if "000000000512" not in p.name]
    assert leftovers == [], leftovers  # no half-written tensor file and no temp file of a failed checkpoint
    if mode == "continue":
        assert any("on_checkpoint_error=continue" in str(w.message) for w in caught)
        csv = (run_dir / "metrics.csv").read_text()
        assert "checkpoint_failures" in csv.splitlines()[0]


_FILE_TOO_LARGE = (
    "import resource, signal, sys\n"
    "import shoal.run.runner as runner\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing\n"
    "real, calls = runner.save_checkpoint, [0]\n"
    "def save(*a, **k):\n"
    "    calls[0] += 1\n"
    "    if calls[0] == 2:  # from the second checkpoint on, no file may grow past 50 kB: a real failing write\n"
    "        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.RLIM_INFINITY))\n"
    "    return real(*a, **k)\n"
    "runner.save_checkpoint = save\n"
    "from shoal.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.parametrize("mode", ["stop", "continue"])
def test_a_real_failing_write_is_handled_as_configured(tmp_path, mode):
    run = tmp_path / "run"
    args = ["train", "ppo", "--env", "CartPole-v1", "--steps", "2048", "--run-dir", str(run), "--quiet",
            "checkpoint_every=512", "eval_episodes=1", f"on_checkpoint_error={mode}"]
    p = subprocess.run([sys.executable, "-c", _FILE_TOO_LARGE, *args], cwd=tmp_path, capture_output=True, text=True,
                       timeout=110)
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    ckpts = list_checkpoints(run / "checkpoints")
    assert [c.name for c in ckpts] == ["ckpt-000000000512.json"]
    load_checkpoint(ckpts[0])  # intact
    assert not [f.name for f in (run / "checkpoints").iterdir() if "000000000512" not in f.name]
    if mode == "stop":
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, p.stderr
        assert "could not write checkpoint ckpt-000000001024" in lines[0] and "File too large" in lines[0]
        assert "ckpt-000000000512.json is intact" in lines[0]
    else:
        assert p.returncode == 0, p.stderr[-2000:]
        assert p.stderr.count("shoal: warning: could not write checkpoint") == 3  # 1024, 1536 and the final 2048


def test_a_checkpoint_of_a_newer_format_is_refused_not_passed_over(tmp_path):
    import json

    import torch

    from shoal.errors import CheckpointFormatError

    for step in (1, 2):
        save_checkpoint(tmp_path / f"ckpt-{step:012d}", {"w": torch.zeros(2)})
    newest = tmp_path / "ckpt-000000000002.json"
    doc = json.loads(newest.read_text())
    doc["format"] = 99
    newest.write_text(json.dumps(doc))
    with pytest.raises(CheckpointFormatError, match="upgrade shoal"):
        load_newest_checkpoint(tmp_path, quarantine=True)
    assert newest.exists() and not (tmp_path / "corrupt").exists()  # intact, so never set aside


def test_a_corrupt_replay_file_loses_only_the_replay(tmp_path):
    import torch

    from shoal.io.checkpoint import Detachable

    save_checkpoint(tmp_path / "ckpt-000000000001", {"w": torch.ones(2)})
    save_checkpoint(tmp_path / "ckpt-000000000002", {"w": torch.full((2,), 2.0), "replay": Detachable({"x": torch.ones(4)})})
    _flip_a_byte(tmp_path / "ckpt-000000000002.detached.safetensors")
    with pytest.warns(UserWarning, match="without its replay"):
        path, tree, _ = load_newest_checkpoint(tmp_path, quarantine=True)
    assert path.name == "ckpt-000000000002.json" and float(tree["w"][0]) == 2.0 and "replay" not in tree
    assert not (tmp_path / "corrupt").exists()


def test_quarantine_moves_every_file_of_the_bad_checkpoint_and_only_once_a_good_one_loads(tmp_path):
    import torch

    from shoal.io.checkpoint import Detachable

    for step in (1, 2):
        save_checkpoint(tmp_path / f"ckpt-{step:012d}", {"w": torch.ones(2), "replay": Detachable({"x": torch.ones(3)})})
    _flip_a_byte(tmp_path / "ckpt-000000000002.safetensors")
    _flip_a_byte(tmp_path / "ckpt-000000000001.safetensors")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError):
        load_newest_checkpoint(tmp_path, quarantine=True)
    assert len(list_checkpoints(tmp_path)) == 2 and not (tmp_path / "corrupt").exists()  # nothing loads: nothing moved
    save_checkpoint(tmp_path / "ckpt-000000000001", {"w": torch.ones(2)})  # a good one again
    with pytest.warns(UserWarning, match="set ckpt-000000000002.json aside"):
        load_newest_checkpoint(tmp_path, quarantine=True)
    (kept,) = (tmp_path / "corrupt").iterdir()
    assert sorted(p.name for p in kept.iterdir()) == ["ckpt-000000000002.detached.safetensors", "ckpt-000000000002.json",
                                                      "ckpt-000000000002.safetensors"]
    assert not list(tmp_path.glob("ckpt-000000000002*"))


def test_a_second_trainer_in_a_live_run_directory_is_refused(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "shoal.cli", "train", "ppo", "--env", "CartPole-v1", "--steps", "400000",
                             "--run-dir", str(run), "--quiet", "checkpoint_every=1024", "eval_episodes=1"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import time

        deadline = time.monotonic() + 90
        while not list_checkpoints(run / "checkpoints"):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        p = shoal_cli("train", "--resume", str(run), "--quiet", cwd=tmp_path)
        assert p.returncode == 2 and "in use by another shoal process" in p.stderr, p.stderr
        assert proc.poll() is None  # the live run was left alone
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_fresh_run_starting_where_another_trainer_holds_the_directory_is_refused_and_deletes_nothing(tmp_path):
    """Two trainers started into one new directory: the one that finds it taken leaves the other's files alone."""
    import fcntl

    import shoal
    from shoal.errors import ConfigError

    run = tmp_path / "run"
    run.mkdir()
    (run / "theirs.txt").write_text("the other trainer's file")
    with open(run / ".lock", "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="in use by another shoal process"):
            shoal.train("ppo", "CartPole-v1", steps=256, run_dir=run, quiet=True, tensorboard=False)
    assert (run / "theirs.txt").read_text() == "the other trainer's file"
    assert not (run / "config.yaml").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_private_ray_instances_one_after_another_in_one_process(tmp_path):
    code = ("import os, shoal\n"
            "for i in range(2):\n"
            "    r = shoal.train('ppo', 'CartPole-v1', steps=512, backend='ray', num_actors=1, run_dir=f'run{i}',\n"
            "                    quiet=True, tensorboard=False, overrides={'eval_episodes': 1})\n"
            "    print(r.env_steps)\n"
            "print(os.environ.get('RAY_AUTH_TOKEN'))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split() == ["512", "512", "None"]  # both ran; the token left the environment with the instance


def test_a_newer_format_is_recognised_before_its_fields_are_judged(tmp_path):
    import json

    from shoal.errors import CheckpointFormatError

    (tmp_path / "ckpt-000000000001.json").write_text(json.dumps({"format": 99, "something": "else"}))
    with pytest.raises(CheckpointFormatError, match="upgrade shoal"):
        load_newest_checkpoint(tmp_path, quarantine=True)
    assert (tmp_path / "ckpt-000000000001.json").exists()


def test_corrupt_newer_checkpoints_are_set_aside_when_the_one_that_loads_lacks_only_its_replay(tmp_path):
    import torch

    from shoal.io.checkpoint import Detachable

    save_checkpoint(tmp_path / "ckpt-000000000001", {"w": torch.ones(2), "replay": Detachable({"x": torch.ones(3)})})
    save_checkpoint(tmp_path / "ckpt-000000000002", {"w": torch.ones(2)})
    _flip_a_byte(tmp_path / "ckpt-000000000002.safetensors")
    _flip_a_byte(tmp_path / "ckpt-000000000001.detached.safetensors")
    with pytest.warns(UserWarning):
        path, tree, _ = load_newest_checkpoint(tmp_path, quarantine=True)
    assert path.name == "ckpt-000000000001.json" and "replay" not in tree
    # the corrupt newer one is gone from the listing, so pruning after the resume never takes it for the newest
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000000000001.json"]


def test_resuming_a_finished_run_leaves_its_newest_checkpoint_as_it_was(tmp_path):
    run = tmp_path / "run"
    shoal.train("ppo", "CartPole-v1", steps=1024, run_dir=str(run), quiet=True, tensorboard=False,
                overrides={"eval_episodes": 1})
    newest = list_checkpoints(run / "checkpoints")[-1]
    before = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}
    shoal.train(resume=str(run), quiet=True, tensorboard=False)
    assert list_checkpoints(run / "checkpoints")[-1] == newest
    assert {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == before  # not rewritten
