"""Checkpoint round trips (weights, optimiser, RNG, counters) and corruption detection."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shoal.errors import CheckpointError
from shoal.io.checkpoint import (
    Detachable,
    delete_checkpoint,
    detached_dropped,
    drop_detached,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from shoal.nets.optim import load_optimizer_state, make_optimizer, optimizer_state


def _trained():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = make_optimizer("adam", net.parameters(), 1e-2, 1e-5)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 3)).pow(2).mean().backward()
        opt.step()
    return net, opt


def test_round_trip_weights_optimizer_rng_counters(tmp_path):
    net, opt = _trained()
    gen = torch.Generator().manual_seed(5)
    gen.manual_seed(5)
    rng = np.random.default_rng(3)
    tree = {"net": net.state_dict(), "opt": optimizer_state(opt), "gen": gen.get_state(),
            "np_rng": rng.bit_generator.state, "steps": 1234, "beta": 0.5, "shape": (1, 2), "arr": np.arange(4)}
    save_checkpoint(tmp_path / "ckpt-000000000010", tree, meta={"env_steps": 10})
    back, meta = load_checkpoint(tmp_path / "ckpt-000000000010.json")
    assert meta == {"env_steps": 10}
    assert back["steps"] == 1234 and back["beta"] == 0.5 and back["shape"] == (1, 2)
    np.testing.assert_array_equal(back["arr"], np.arange(4))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(back["net"][k], v, rtol=0, atol=0)
    # The optimiser continues identically.
    net2, opt2 = _trained()
    net2.load_state_dict(back["net"])
    load_optimizer_state(opt2, back["opt"])
    x = torch.randn(8, 3)
    for n, o in ((net, opt), (net2, opt2)):
        o.zero_grad()
        n(x).pow(2).mean().backward()
        o.step()
    for a, b in zip(net.parameters(), net2.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # RNG states continue identically.
    g2 = torch.Generator()
    g2.set_state(back["gen"])
    assert torch.equal(torch.rand(5, generator=gen), torch.rand(5, generator=g2))
    r2 = np.random.default_rng()
    r2.bit_generator.state = back["np_rng"]
    assert rng.random() == r2.random()


def test_corrupt_weights_detected(tmp_path):
    save_checkpoint(tmp_path / "ckpt-000000000001", {"w": torch.ones(10)})
    w = tmp_path / "ckpt-000000000001.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "ckpt-000000000001.json")


def test_truncated_json_and_missing_files(tmp_path):
    save_checkpoint(tmp_path / "ckpt-000000000001", {"w": torch.ones(2)})
    j = tmp_path / "ckpt-000000000001.json"
    j.write_text(j.read_text()[:20])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(j)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.json")
    save_checkpoint(tmp_path / "ckpt-000000000002", {"w": torch.ones(2)})
    (tmp_path / "ckpt-000000000002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "ckpt-000000000002.json")


def test_no_temp_files_left_and_listing_order(tmp_path):
    for step in (30, 5, 200):
        save_checkpoint(tmp_path / f"ckpt-{step:012d}", {"s": step})
    assert [p.name for p in list_checkpoints(tmp_path)] == [f"ckpt-{s:012d}.json" for s in (5, 30, 200)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    doc = json.loads((tmp_path / "ckpt-000000000005.json").read_text())
    assert doc["weights"] == "ckpt-000000000005.safetensors"


def _big_tree():
    rng = np.random.default_rng(0)
    replay = Detachable({"obs": rng.random((5000, 4), dtype=np.float32), "keys": np.arange(5000),
                         "rng": np.random.default_rng(1).bit_generator.state, "size": 5000})
    return {"learner": {"w": torch.arange(6.0).reshape(2, 3)}, "steps": 7, "replay": replay}


def test_detachable_subtrees_get_their_own_file_and_can_be_dropped(tmp_path):
    tree = _big_tree()
    j = save_checkpoint(tmp_path / "ckpt-000000000001", tree)
    detached = tmp_path / "ckpt-000000000001.detached.safetensors"
    assert detached.exists() and (tmp_path / "ckpt-000000000001.safetensors").stat().st_size < 1000
    back, _ = load_checkpoint(j)
    assert isinstance(back["replay"], Detachable) and back["replay"]["size"] == 5000
    np.testing.assert_array_equal(back["replay"]["obs"], tree["replay"]["obs"])
    assert back["replay"]["rng"] == tree["replay"]["rng"] and not detached_dropped(j)
    light, _ = load_checkpoint(j, detached=False)  # e.g. for evaluation: the weights only
    assert "replay" not in light and light["steps"] == 7
    drop_detached(j)
    assert not detached.exists() and detached_dropped(j)
    back, _ = load_checkpoint(j)
    assert set(back) == {"learner", "steps"} and torch.equal(back["learner"]["w"], tree["learner"]["w"])
    drop_detached(j)  # dropping twice is harmless
    import pickle

    assert type(pickle.loads(pickle.dumps(tree["replay"]))) is Detachable  # node states cross processes on Ray
    delete_checkpoint(j)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_or_missing_detached_file_is_detected(tmp_path):
    j = save_checkpoint(tmp_path / "ckpt-000000000001", _big_tree())
    d = tmp_path / "ckpt-000000000001.detached.safetensors"
    data = bytearray(d.read_bytes())
    data[len(data) // 2] ^= 0x01
    d.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(j)
    load_checkpoint(j, detached=False)  # the rest is intact
    d.write_bytes(bytes(data[:100]))  # truncated
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(j)
    d.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(j)


class _Spy:
    """Wraps a binary file and records every read request (bytes asked, bytes got)."""

    def __init__(self, f, log):
        self.f, self.log = f, log

    def readinto(self, b):
        n = self.f.readinto(b)
        self.log.append((self.f.name, len(b), n))
        return n

    def read(self, size=-1):
        out = self.f.read(size)
        self.log.append((self.f.name, size if size is not None and size >= 0 else float("inf"), len(out)))
        return out

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_files_are_hashed_in_chunks_and_read_once_on_load(tmp_path, monkeypatch):
    import builtins

    import shoal.io.checkpoint as ck

    log = []
    monkeypatch.setattr(ck, "_CHUNK", 4096)
    monkeypatch.setattr(ck, "open", lambda *a, **k: _Spy(builtins.open(*a, **k), log), raising=False)
    j = save_checkpoint(tmp_path / "ckpt-000000000001", _big_tree())
    files = {p.name: p.stat().st_size for p in tmp_path.glob("*.safetensors")}
    assert files["ckpt-000000000001.detached.safetensors"] > 20 * 4096
    assert log and all(asked <= 4096 for _, asked, _ in log)  # hashing after the write: chunk by chunk
    log.clear()
    load_checkpoint(j)
    assert all(asked <= 4096 for _, asked, _ in log)
    got: dict[str, int] = {}
    for name, _, n in log:
        got[Path(name).name] = got.get(Path(name).name, 0) + n
    assert got == files  # every tensor file read exactly once, nothing more


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
                                   torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool])
def test_tensors_of_every_dtype_and_shape_round_trip(tmp_path, dtype):
    g = torch.Generator().manual_seed(0)
    tensors = {"scalar": torch.tensor(3), "empty": torch.zeros(0, 5), "m": torch.randn(7, 3, generator=g) * 50}
    tree = {k: v.to(dtype) for k, v in tensors.items()}
    tree["arr"] = tree["m"].numpy() if dtype != torch.bfloat16 else np.zeros(3)
    back, _ = load_checkpoint(save_checkpoint(tmp_path / "ckpt-000000000001", tree))
    for k in ("scalar", "empty", "m"):
        assert back[k].dtype == dtype and back[k].shape == tree[k].shape and torch.equal(back[k], tree[k])
    np.testing.assert_array_equal(back["arr"], tree["arr"])
    back["arr"][...] = 0  # loaded arrays are writeable


def test_views_and_repeated_arrays_are_saved_safely(tmp_path):
    base = np.arange(12.0)
    tree = {"a": base, "again": base, "view": base[2:6], "strided": base[::3], "ro": np.arange(3)}
    tree["ro"].flags.writeable = False
    back, _ = load_checkpoint(save_checkpoint(tmp_path / "ckpt-000000000001", tree))
    for k, v in tree.items():
        np.testing.assert_array_equal(back[k], v)


def test_version_one_checkpoints_load_and_newer_formats_are_refused(tmp_path):
    j = save_checkpoint(tmp_path / "ckpt-000000000001", {"w": torch.ones(3), "n": 2})
    doc = json.loads(j.read_text())
    del doc["detached"]
    doc["format"] = 1
    j.write_text(json.dumps(doc))
    back, _ = load_checkpoint(j)
    assert back["n"] == 2 and torch.equal(back["w"], torch.ones(3))
    doc["format"] = 99
    j.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="upgrade shoal"):
        load_checkpoint(j)
