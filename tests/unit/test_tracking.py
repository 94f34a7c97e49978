"""Weights & Biases tracking, offline: the run's history holds what metrics.csv (and TensorBoard) got."""

from __future__ import annotations

import csv
import json
import math
import re
import struct
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")

_BLOCK = 32768  # a .wandb file is a LevelDB-format log of W&B's protobuf Records, in 32 KiB blocks


def _wandb_records(path: Path) -> list:
    """Every Record of a ``run-*.wandb`` file, decoded with W&B's own protobuf schema."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    out, pos, pending = [], 7, b""  # a 7-byte file header, then 7-byte chunk headers: crc32, length, type
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # FULL
            payload = chunk
        elif kind in (2, 3):  # FIRST, MIDDLE
            pending = (b"" if kind == 2 else pending) + chunk
            continue
        elif kind == 4:  # LAST
            payload, pending = pending + chunk, b""
        else:
            continue
        record = pb.Record()
        record.ParseFromString(payload)
        out.append(record)
    return out


def _offline_run(wandb_dir: Path) -> Path:
    runs = sorted(wandb_dir.glob("wandb/offline-run-*"))
    assert len(runs) >= 1, f"no offline W&B run under {wandb_dir}"
    return runs[-1]


def _history(run_dir: Path) -> list[dict]:
    rows = []
    for r in _wandb_records(next(run_dir.glob("run-*.wandb"))):
        if r.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return rows


def _config(run_dir: Path) -> dict:
    """The run's config: set with the run record, updated by config records."""
    cfg: dict = {}
    for r in _wandb_records(next(run_dir.glob("run-*.wandb"))):
        kind = r.WhichOneof("record_type")
        if kind in ("run", "config"):
            for item in (r.run.config if kind == "run" else r.config).update:
                cfg[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return cfg


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """W&B in offline mode, writing under tmp_path/wb; no login, no network."""
    wb = tmp_path / "wb"
    wb.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wb))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # were anything sent, it would fail, not hang
    return wb


def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


@pytest.mark.timeout(90)
def test_offline_wandb_run_holds_every_metric_row_the_config_and_videos(offline, tmp_path):
    from shoal.run.runner import train

    run = train("ppo", "CartPole-v1", steps=256, run_dir=tmp_path / "run",
                overrides={"num_envs": 2, "rollout_length": 32, "eval_every": 128, "eval_episodes": 2, "track": "wandb",
                           "wandb_project": "shoal-tests", "capture_video": True, "video_max_frames": 20})
    wb_run = _offline_run(offline)
    history = _history(wb_run)
    rows = _csv_rows(run.run_dir / "metrics.csv")
    assert len(rows) == 6 and sum("eval_return_mean" in r for r in rows) == 2  # 4 iterations of 64 steps, 2 evaluations
    for row in rows:  # every CSV row is one W&B history row at the same env step, with the same values
        step = row.pop("env_steps")
        match = [h for h in history if h.get("env_steps") == step and set(row) <= set(h)]
        assert match, f"no W&B row at env_steps={step} with {sorted(row)}"
        for k, v in row.items():
            assert math.isclose(match[0][k], v, rel_tol=1e-6, abs_tol=1e-9), (step, k)
    cfg = _config(wb_run)
    assert cfg["algo"] == "ppo" and cfg["env"] == "CartPole-v1"
    assert cfg["run"]["steps"] == 256 and cfg["agent"]["rollout_length"] == 32
    videos = [h for h in history if h.get("eval/video/_type") == "video-file"]
    assert [h["env_steps"] for h in videos] == [256]  # capture_video without video_every: the final policy's
    assert (wb_run / "files" / videos[0]["eval/video/path"]).stat().st_size > 0
    assert json.loads((run.run_dir / "wandb.json").read_text())["project"] == "shoal-tests"


@pytest.mark.timeout(90)
def test_resumed_run_continues_the_same_wandb_run(offline, tmp_path):
    from shoal.run.runner import train

    settings = {"num_envs": 2, "rollout_length": 32, "eval_episodes": 0, "track": "wandb"}
    first = train("ppo", "CartPole-v1", steps=128, run_dir=tmp_path / "run", overrides=settings)
    run_id = json.loads((first.run_dir / "wandb.json").read_text())["id"]
    train(resume=first.run_dir, steps=192)
    runs = sorted(offline.glob("wandb/offline-run-*"))
    # wandb names an offline run offline-run-<time>-<id>, adding -1 when a second one starts in the same second
    assert len(runs) == 2 and all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", r.name) for r in runs)
    steps = [h["env_steps"] for h in _history(runs[-1]) if "episode_return_mean" in h]
    assert steps and min(steps) > 128 and max(steps) == 192


def test_track_options_of_shoal_train_become_run_settings(offline, tmp_path, monkeypatch):
    import yaml

    import shoal.run.runner as runner
    from shoal.cli import main

    seen = {}

    def fake_train(*args, **kwargs):
        seen.update(kwargs["overrides"])
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train", fake_train)
    assert main(["train", "ppo", "--env", "CartPole-v1", "--track", "wandb", "--wandb-project", "p1",
                 "--wandb-entity", "team", "lr=1e-3"]) == 130
    assert seen == {"track": "wandb", "wandb_project": "p1", "wandb_entity": "team", "lr": 1e-3}
    from shoal.run.resolve import resolve

    cfg = resolve("ppo", "CartPole-v1", "CartPole-v1", None, seen, {})
    assert yaml.safe_load(yaml.safe_dump(cfg.to_yaml_dict()))["run"]["track"] == "wandb"


def test_unknown_tracker_is_a_config_error():
    from shoal.errors import ConfigError
    from shoal.settings import RunConfig

    with pytest.raises(ConfigError, match="track must be empty or wandb"):
        RunConfig(track="mlflow")


class _FailingTracker:
    """A tracker whose close() fails, recording the exit code it was given."""

    def __init__(self) -> None:
        self.exit_codes: list[int] = []

    def log(self, step, values) -> None:
        pass

    def log_video(self, step, tag, path, fps) -> None:
        pass

    def close(self, exit_code: int = 0) -> None:
        self.exit_codes.append(exit_code)
        raise RuntimeError("W&B service gone")


def _spy_program(monkeypatch, closed: list) -> None:
    import shoal.run.runner as runner

    real = runner.get_topology

    def get_topology(name):
        make = real(name)

        def build(*args, **kwargs):
            program = make(*args, **kwargs)
            close = program.close
            program.close = lambda: (closed.append(True), close())
            return program
        return build

    monkeypatch.setattr(runner, "get_topology", get_topology)


@pytest.mark.parametrize("fail_training", [False, True])
def test_a_tracker_that_fails_to_finish_still_lets_the_program_close(tmp_path, monkeypatch, fail_training):
    import shoal.run.runner as runner

    tracker, closed = _FailingTracker(), []
    monkeypatch.setattr(runner, "make_tracker", lambda *a, **k: tracker)
    _spy_program(monkeypatch, closed)

    def on_eval(step, ret):
        if fail_training:
            raise KeyError("the run itself failed")
        return False

    import contextlib

    from shoal.errors import ShoalWarning

    # A run that raised shows its own error; the tracker's failure to finish is then a warning.
    warns = pytest.warns(ShoalWarning, match="could not finish") if fail_training else contextlib.nullcontext()
    with pytest.raises(KeyError if fail_training else RuntimeError, match="failed" if fail_training else "W&B"), warns:
        runner.train("ppo", "CartPole-v1", steps=128, run_dir=tmp_path / "run", on_eval=on_eval,
                     overrides={"num_envs": 2, "rollout_length": 32, "eval_every": 64, "eval_episodes": 1})
    assert closed == [True]  # the actors (Ray workers on Ray) are released
    assert tracker.exit_codes == [1 if fail_training else 0]  # a run that raised is marked failed


def test_wandb_tracker_close_finishes_with_the_exit_code_and_always_tears_down():
    from shoal.run.tracking import WandbTracker

    calls = []

    class Run:
        def finish(self, exit_code=None):
            calls.append(("finish", exit_code))
            raise OSError("disk full")

    class Wandb:
        run = None

        def teardown(self):
            calls.append(("teardown", None))

    t = WandbTracker.__new__(WandbTracker)
    t.run, t._wandb = Run(), Wandb()
    with pytest.raises(OSError):
        t.close(exit_code=1)
    assert calls == [("finish", 1), ("teardown", None)]
