"""shoal's optimisers follow torch.optim's update rules; clipping, Polyak and flat buffers do what they say."""

import copy

import pytest
import torch
from torch import nn

from shoal.nets.optim import (
    SGD,
    Adam,
    FlatParams,
    RMSprop,
    clip_grad_norm_,
    grad_norm,
    load_optimizer_state,
    make_optimizer,
    optimizer_state,
    polyak_update_,
)


def _net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))


def _close(a, b):
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


OPTIMISERS = [
    ("adam-fused", lambda p: Adam(p, lr=3e-3, eps=1e-5, fused=True), lambda p: torch.optim.Adam(p, lr=3e-3, eps=1e-5, foreach=True)),
    ("adam-foreach", lambda p: Adam(p, lr=3e-3, eps=1e-5, fused=False), lambda p: torch.optim.Adam(p, lr=3e-3, eps=1e-5, foreach=True)),
    ("rmsprop", lambda p: RMSprop(p, lr=7e-4, alpha=0.99, eps=1e-5),
     lambda p: torch.optim.RMSprop(p, lr=7e-4, alpha=0.99, eps=1e-5, foreach=True)),
    ("sgd", lambda p: SGD(p, lr=1e-2), lambda p: torch.optim.SGD(p, lr=1e-2, foreach=True)),
]


@pytest.mark.parametrize("ours,ref", [o[1:] for o in OPTIMISERS], ids=[o[0] for o in OPTIMISERS])
def test_matches_torch_optim(ours, ref):
    a, b = _net(0), _net(0)
    oa, ob = ours(a.parameters()), ref(b.parameters())
    g = torch.Generator().manual_seed(1)
    for _ in range(25):
        x = torch.randn(16, 5, generator=g)
        for net, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    _close(a, b)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "foreach"])
def test_adam_keeps_a_step_count_per_parameter(fused):
    """The last layer gets no gradient on every third step: its bias correction must lag the first layer's."""
    a, b = _net(0), _net(0)
    oa = Adam(a.parameters(), lr=1e-2, fused=fused)
    ob = torch.optim.Adam(b.parameters(), lr=1e-2, foreach=False)
    g = torch.Generator().manual_seed(1)
    for step in range(30):
        x = torch.randn(16, 5, generator=g)
        for net, opt in ((a, oa), (b, ob)):
            opt.zero_grad(set_to_none=True)
            net(x).pow(2).mean().backward()
            if step % 3 == 1:
                net[2].weight.grad = None  # this step reaches only the first layer and the last bias
            opt.step()
    _close(a, b)
    steps = sorted({int(s["step"]) for s in oa.state.values()})
    assert steps == [20, 30]


def test_adam_parameter_groups_take_their_own_learning_rates():
    a, b = _net(0), _net(0)
    groups = lambda n: [{"params": n[0].parameters(), "lr": 1e-2}, {"params": n[2].parameters(), "lr": 1e-3}]  # noqa: E731
    oa, ob = make_optimizer("adam", groups(a), lr=5.0), torch.optim.Adam(groups(b), lr=5.0)
    for _ in range(5):
        for net, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            net(torch.ones(3, 5)).sum().backward()
            opt.step()
    _close(a, b)
    assert [g["lr"] for g in oa.param_groups] == [1e-2, 1e-3]


def test_adam_over_a_flat_buffer_matches_torch_adam():
    a, b = _net(0), _net(0)
    ref = torch.optim.Adam(a.parameters(), lr=1e-2, eps=1e-8)
    flat = FlatParams(b.parameters())
    ours = Adam(flat.parameters(), lr=1e-2, eps=1e-8)
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        x = torch.randn(16, 5, generator=gen)
        ref.zero_grad(set_to_none=False)
        a(x).pow(2).sum().backward()
        ref.step()
        flat.zero_grad()
        b(x).pow(2).sum().backward()
        ours.step()
    _close(a, b)


def test_state_round_trip_continues_identically():
    a, b = _net(0), _net(0)
    oa = Adam(a.parameters(), lr=1e-2)
    for _ in range(3):
        oa.zero_grad()
        a(torch.ones(2, 5)).sum().backward()
        oa.step()
    b.load_state_dict(a.state_dict())
    ob = Adam(b.parameters(), lr=1.0)
    load_optimizer_state(ob, optimizer_state(oa))
    assert ob.param_groups[0]["lr"] == 1e-2
    for net, opt in ((a, oa), (b, ob)):
        opt.zero_grad()
        net(torch.ones(2, 5)).sum().backward()
        opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_params_and_grads_are_views_of_the_flat_buffers():
    net = _net(0)
    before = copy.deepcopy(net.state_dict())
    flat = FlatParams(net.parameters())
    assert flat.data.numel() == sum(p.numel() for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])  # values kept
    net(torch.randn(4, 5)).pow(2).sum().backward()
    assert flat.grad is not None and flat.grad.abs().sum() > 0
    assert torch.equal(torch.cat([p.grad.reshape(-1) for p in net.parameters()]), flat.grad)
    assert flat.parameters()[0].grad is flat.grad
    net.load_state_dict(before)  # writes through the views into the buffer
    assert torch.equal(flat.data, torch.cat([v.reshape(-1) for v in before.values()]))
    flat.zero_grad()
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in net.parameters())


@pytest.mark.parametrize("flat", [False, True], ids=["params", "flat"])
@pytest.mark.parametrize("scale", [10.0, 0.01], ids=["above", "below"])
def test_clip_grad_norm_matches_torch(flat, scale):
    a, b = _net(0), _net(0)
    params = FlatParams(a.parameters()).parameters() if flat else list(a.parameters())
    for net in (a, b):
        (net(torch.ones(3, 5)).sum() * scale).backward()
    unclipped = [p.grad.clone() for p in a.parameters()]
    ours = clip_grad_norm_(params, 1.0)
    torch.testing.assert_close(ours, nn.utils.clip_grad_norm_(b.parameters(), 1.0))
    for pa, pb, g in zip(a.parameters(), b.parameters(), unclipped):
        torch.testing.assert_close(pa.grad, pb.grad)
        assert torch.equal(pa.grad, g) == (scale < 1.0)  # scaled only when the norm is above max_norm
    assert float(grad_norm([])) == 0.0


def test_polyak_update_on_tensors_and_lists():
    target, online = torch.zeros(4), torch.ones(4)
    polyak_update_(target, online, 0.1)
    torch.testing.assert_close(target, torch.full((4,), 0.1))
    ts, os_ = [torch.zeros(2), torch.ones(3)], [torch.ones(2), torch.zeros(3)]
    polyak_update_(ts, os_, 0.25)
    torch.testing.assert_close(ts[0], torch.full((2,), 0.25))
    torch.testing.assert_close(ts[1], torch.full((3,), 0.75))
    polyak_update_(target, online, 1.0)  # hard update
    assert torch.equal(target, online)
    polyak_update_(ts, os_, 1.0)
    assert all(torch.equal(t, o) for t, o in zip(ts, os_))


def test_make_optimizer_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("adadelta", _net(0).parameters(), 1e-3)
