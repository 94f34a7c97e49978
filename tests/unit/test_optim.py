"""shoal's foreach Adam and RMSprop follow torch.optim's update rules exactly."""

import pytest
import torch

from shoal.nets.optim import Adam, RMSprop, load_optimizer_state, optimizer_state


def _net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))


@pytest.mark.parametrize("ours,ref", [
    (lambda p: Adam(p, lr=3e-3, eps=1e-5), lambda p: torch.optim.Adam(p, lr=3e-3, eps=1e-5, foreach=True)),
    (lambda p: RMSprop(p, lr=7e-4, alpha=0.99, eps=1e-5), lambda p: torch.optim.RMSprop(p, lr=7e-4, alpha=0.99, eps=1e-5, foreach=True)),
])
def test_matches_torch_optim(ours, ref):
    a, b = _net(0), _net(0)
    oa, ob = ours(a.parameters()), ref(b.parameters())
    g = torch.Generator().manual_seed(1)
    for step in range(25):
        x = torch.randn(16, 5, generator=g)
        for net, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


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
