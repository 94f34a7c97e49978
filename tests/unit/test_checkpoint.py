"""Checkpoint round trips (weights, optimiser, RNG, counters) and corruption detection."""

import json

import numpy as np
import pytest
import torch

from shoal.errors import CheckpointError
from shoal.io.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
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
