"""Flat snapshot buffers and flat gradients."""

import numpy as np
import pytest
import torch

from shoal.nets.flat import FlatLayout, flat_grad, set_flat_grad


def _state():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2))
    sd = dict(net.state_dict())
    sd["count"] = torch.tensor(7, dtype=torch.int64)
    sd["mean"] = torch.randn(3, dtype=torch.float64)
    sd["flag"] = torch.tensor([True, False])
    return net, sd


def test_pack_unpack_round_trips_every_dtype_and_is_read_only():
    _, sd = _state()
    layout = FlatLayout.of(sd)
    buf = layout.pack(sd)
    assert buf.dtype == np.uint8 and buf.ndim == 1 and not buf.flags.writeable
    assert all(off % 8 == 0 for off in layout.offsets)
    out = layout.unpack_tensors(buf)
    assert list(out) == list(sd)
    for k in sd:
        assert out[k].dtype == sd[k].dtype and out[k].shape == sd[k].shape
        torch.testing.assert_close(out[k], sd[k])
    views = layout.unpack(buf)
    with pytest.raises(ValueError):
        views["0.weight"][0, 0] = 1.0


def test_snapshot_is_independent_of_the_live_weights():
    net, sd = _state()
    layout = FlatLayout.of(sd)
    buf = layout.pack(sd)
    before = layout.unpack(buf)["0.weight"].copy()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    np.testing.assert_array_equal(layout.unpack(buf)["0.weight"], before)


def test_unpack_rejects_a_buffer_of_another_layout():
    _, sd = _state()
    layout = FlatLayout.of(sd)
    with pytest.raises(ValueError, match="flat uint8 buffer"):
        layout.unpack(np.zeros(layout.nbytes + 8, np.uint8))


def test_flat_gradients_round_trip():
    net, _ = _state()
    net(torch.randn(4, 3)).sum().backward()
    params = list(net.parameters())
    g = flat_grad(params)
    assert g.numel() == sum(p.numel() for p in params)
    want = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    set_flat_grad(params, g * 2)
    for p, w in zip(params, want):
        torch.testing.assert_close(p.grad, 2 * w)
    with pytest.raises(ValueError, match="flat gradient"):
        set_flat_grad(params, g[:-1])
