"""Flat parameter buffers and the flat Adam against torch.optim.Adam."""

from __future__ import annotations

import copy

import torch
from torch import nn

from shoal.agents.continuous.optim import FlatAdam, FlatParams, retain_freed_memory


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))


def _loss(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net(x).pow(2).sum()


def test_flat_adam_matches_torch_adam() -> None:
    a, b = _net(), _net()
    ref = torch.optim.Adam(a.parameters(), lr=1e-2, eps=1e-8)
    flat = FlatParams(b.parameters())
    ours = FlatAdam(flat, lr=1e-2, eps=1e-8)
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        x = torch.randn(16, 3, generator=gen)
        ref.zero_grad()
        _loss(a, x).backward()
        ref.step()
        flat.zero_grad()
        _loss(b, x).backward()
        ours.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_params_and_grads_are_views_of_the_flat_buffers() -> None:
    net = _net()
    before = copy.deepcopy(net.state_dict())
    flat = FlatParams(net.parameters())
    assert flat.data.numel() == sum(p.numel() for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])  # values kept
    _loss(net, torch.randn(4, 3)).backward()
    assert flat.grad is not None and flat.grad.abs().sum() > 0
    assert torch.equal(torch.cat([p.grad.reshape(-1) for p in net.parameters()]), flat.grad)
    # load_state_dict writes through the views into the buffer
    net.load_state_dict(before)
    assert torch.equal(flat.data, torch.cat([v.reshape(-1) for v in before.values()]))
    flat.zero_grad()
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in net.parameters())


def test_clip_grad_norm_scales_only_when_above() -> None:
    net = _net()
    flat = FlatParams(net.parameters())
    assert flat.grad is not None
    flat.grad.fill_(1.0)
    n = flat.grad.numel()
    norm = flat.clip_grad_norm_(1.0)
    assert abs(norm.item() - n ** 0.5) < 1e-4
    assert abs(torch.linalg.vector_norm(flat.grad).item() - 1.0) < 1e-4
    flat.grad.fill_(0.01)
    flat.clip_grad_norm_(1.0)
    assert torch.allclose(flat.grad, torch.full_like(flat.grad, 0.01))


def test_adam_state_round_trip() -> None:
    net = _net()
    flat = FlatParams(net.parameters())
    opt = FlatAdam(flat, lr=1e-3)
    _loss(net, torch.randn(4, 3)).backward()
    opt.step()
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in opt.state().items()}
    net2 = _net()
    opt2 = FlatAdam(FlatParams(net2.parameters()), lr=5.0)
    opt2.load_state(state)
    assert opt2.t == 1 and opt2.lr == 1e-3 and torch.equal(opt2.m, opt.m) and torch.equal(opt2.v, opt.v)


def test_retain_freed_memory_is_idempotent() -> None:
    assert retain_freed_memory() == retain_freed_memory()
