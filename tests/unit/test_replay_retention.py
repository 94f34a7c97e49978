"""Only the newest checkpoint keeps the replay; resuming from it restores the replay, from an older one starts it empty."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import shoal
from shoal.io.checkpoint import delete_checkpoint, detached_dropped, list_checkpoints, load_checkpoint

OVR = {"checkpoint_every": 512, "keep_checkpoints": 3, "eval_episodes": 0, "learning_starts": 200,
       "batch_size": 32, "buffer_size": 5000, "hidden": [16, 16], "train_freq": 16, "gradient_steps": 1}


def _replay(ckpt: Path) -> dict | None:
    tree, _ = load_checkpoint(ckpt)
    return tree["program"]["learner_node"].get("tables", {}).get("replay")


@pytest.fixture(scope="module")
def run_2560(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("retention") / "run"
    shoal.train("dqn", "CartPole-v1", steps=2560, seed=0, run_dir=d, quiet=True, tensorboard=False, overrides=OVR)
    return d


def test_only_the_newest_checkpoint_keeps_the_replay(run_2560: Path) -> None:
    ckpts = list_checkpoints(run_2560 / "checkpoints")
    assert [int(c.stem.split("-")[-1]) for c in ckpts] == [1536, 2048, 2560]  # keep_checkpoints=3
    names = sorted(p.name for p in (run_2560 / "checkpoints").iterdir())
    assert names == sorted([f"{c.stem}.json" for c in ckpts] + [f"{c.stem}.safetensors" for c in ckpts]
                           + [f"{ckpts[-1].stem}.detached.safetensors"])  # nothing left of deleted ones
    assert [detached_dropped(c) for c in ckpts] == [True, True, False]
    assert [_replay(c) is None for c in ckpts] == [True, True, False]
    assert _replay(ckpts[-1])["index"]["size"] > 2000


def test_resume_from_the_newest_restores_the_replay(run_2560: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "run"
    shutil.copytree(run_2560, d)
    saved = _replay(list_checkpoints(d / "checkpoints")[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "empty replay" warning
        shoal.train(resume=d, steps=3072, quiet=True, tensorboard=False)
    after = _replay(list_checkpoints(d / "checkpoints")[-1])
    # the saved items are all still there (nothing evicted yet), followed by the new ones
    assert after["num_evicted"] == saved["num_evicted"] == 0
    assert after["index"]["size"] > saved["index"]["size"] + 400
    n = saved["index"]["size"]
    for k, v in saved["storage"]["fields"].items():
        assert (after["storage"]["fields"][k][:n] == v).all()


def test_resume_from_an_older_checkpoint_warns_and_continues_with_empty_replay(run_2560: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "run"
    shutil.copytree(run_2560, d)
    delete_checkpoint(list_checkpoints(d / "checkpoints")[-1])  # e.g. the newest was corrupt and deleted
    with pytest.warns(UserWarning, match="holds no replay"):
        r = shoal.train(resume=d, quiet=True, tensorboard=False)
    assert r.env_steps == 2560
    last = list_checkpoints(d / "checkpoints")[-1]
    tree, _ = load_checkpoint(last)
    table = tree["program"]["learner_node"]["tables"]["replay"]
    assert 0 < table["index"]["size"] <= 512  # refilled from empty with the 512 steps since the checkpoint
    # the learner waited for a batch's worth of items, then caught up with the replay ratio
    full, _ = load_checkpoint(list_checkpoints(run_2560 / "checkpoints")[-1])
    assert tree["program"]["learner"]["steps"] == tree["program"]["learner_node"]["learner_steps"]
    assert tree["program"]["learner_node"]["learner_steps"] == full["program"]["learner_node"]["learner_steps"]
