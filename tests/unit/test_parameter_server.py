"""The sharded parameter server: slicing, reassembly, versions, the staleness and outlier filters, AdaGrad."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from shoal.backends.inprocess import InProcessBackend
from shoal.nets.optim import Adagrad, make_optimizer
from shoal.services.parameter_server import (
    APPLIED,
    OUTLIER,
    STALE,
    ParameterServerClient,
    ParameterShard,
    RunningLoss,
    ShardConfig,
    flat_parameters,
    shard_bounds,
    spawn_shards,
)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))  # 40 + 27 = 67 parameters


def test_shard_bounds_cover_the_vector_in_near_equal_contiguous_slices():
    assert shard_bounds(67, 1) == [(0, 67)]
    assert shard_bounds(67, 2) == [(0, 33), (33, 67)]
    assert shard_bounds(67, 4) == [(0, 16), (16, 33), (33, 50), (50, 67)]
    with pytest.raises(ValueError, match="shards"):
        shard_bounds(3, 4)


@pytest.mark.parametrize("num_shards", [1, 2, 3, 4])
def test_shards_reassemble_to_the_full_parameters_exactly(num_shards):
    net = _net()
    shards = spawn_shards(InProcessBackend(), net, num_shards, ShardConfig())
    sizes = [sh.node.size for sh in shards]
    assert sum(sizes) == 67 and max(sizes) - min(sizes) <= 1
    other = _net(seed=1)
    client = ParameterServerClient(shards, other)  # starts from other weights: everything comes from the shards
    assert client.pull() and client.versions == [0] * num_shards
    assert torch.equal(client.flat, flat_parameters(net))
    sd = client.state_dict(other)
    assert set(sd) == set(net.state_dict())
    for k, v in net.state_dict().items():
        assert torch.equal(sd[k], v), k
    client.load_into(other)
    for a, b in zip(other.parameters(), net.parameters()):
        assert torch.equal(a, b)
    assert not client.pull()  # nothing newer: no change, nothing moved


def test_each_shard_version_grows_by_one_per_applied_gradient_and_the_math_is_unsharded_adagrad():
    net = _net()
    cfg = ShardConfig(optimizer="adagrad", lr=0.05)
    shards = spawn_shards(InProcessBackend(), net, 3, cfg)
    client = ParameterServerClient(shards, net)
    client.pull()
    ref = nn.Parameter(flat_parameters(net).clone())
    ref_opt = torch.optim.Adagrad([ref], lr=0.05, eps=1e-10)
    gen = torch.Generator().manual_seed(0)
    for step in range(1, 6):
        g = torch.randn(67, generator=gen)
        both = step % 2 == 0  # every other step, the push brings the new slices back (no pull)
        assert client.push(g, loss=1.0, pull=both) == [APPLIED] * 3
        assert [sh.node.version for sh in shards] == [step] * 3
        ref.grad = g.clone()
        ref_opt.step()
        assert client.versions == ([step] * 3 if both else [step - 1] * 3)
        assert client.pull() != both
        assert client.versions == [step] * 3
        torch.testing.assert_close(client.flat, ref.detach(), rtol=0, atol=1e-6)


def test_a_stale_gradient_is_dropped_and_counted():
    shard = ParameterShard(0, np.zeros(5, np.float32), ShardConfig(optimizer="sgd", lr=1.0, max_staleness=2))
    one = np.ones(5, np.float32)
    for v in range(3):
        assert shard.push(one, base_version=v) == (APPLIED, v + 1)
    before = shard.param.detach().clone()
    assert torch.equal(before, torch.full((5,), -3.0))
    assert shard.push(one, base_version=1) == (APPLIED, 4)  # 2 versions old: still accepted
    assert shard.push(one, base_version=1) == (STALE, 4)  # now 3 versions old: dropped
    assert torch.equal(shard.param.detach(), torch.full((5,), -4.0))
    m = shard.metrics()
    assert m["dropped_stale"] == 1 and m["applied"] == 4 and m["version"] == 4 and m["dropped_outlier"] == 0
    assert m["staleness"] == pytest.approx(np.mean([0, 0, 0, 2, 3]))


def _warmed(k: float = 3.0) -> ParameterShard:
    shard = ParameterShard(0, np.zeros(3, np.float32),
                           ShardConfig(optimizer="sgd", lr=1.0, outlier_std=k, outlier_warmup=20, loss_window=100))
    for i in range(20):
        assert shard.push(np.zeros(3, np.float32), shard.version, loss=1.0 if i % 2 == 0 else 2.0)[0] == APPLIED
    return shard


def test_an_outlier_loss_gradient_is_dropped_and_counted():
    shard = _warmed()
    # Losses 1, 2, 1, 2, ...: running mean 1.5, standard deviation 0.5; 3 std above the mean is 3.0.
    assert shard.losses.mean == pytest.approx(1.5) and shard.losses.std == pytest.approx(0.5)
    assert shard.push(np.ones(3, np.float32), shard.version, loss=3.2) == (OUTLIER, 20)
    assert torch.equal(shard.param.detach(), torch.zeros(3))  # not applied
    assert shard.metrics()["dropped_outlier"] == 1
    fresh = _warmed()
    assert fresh.push(np.ones(3, np.float32), fresh.version, loss=2.9) == (APPLIED, 21)  # under the threshold
    assert fresh.metrics()["dropped_outlier"] == 0


def test_the_outlier_filter_waits_for_its_warmup():
    shard = ParameterShard(0, np.zeros(2, np.float32), ShardConfig(outlier_std=1.0, outlier_warmup=5))
    for loss in (1.0, 1.0, 1.0, 1.0, 100.0):  # the fifth is far out, but only 4 losses were seen
        assert shard.push(np.zeros(2, np.float32), shard.version, loss=loss)[0] == APPLIED


def test_running_loss_matches_a_slow_loop_of_the_exponential_rule():
    window, losses = 4, [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    r = RunningLoss(window)
    mean = var = 0.0
    for n, x in enumerate(losses, start=1):
        r.update(x)
        if n <= window:  # the plain mean and population variance of what was seen
            mean, var = float(np.mean(losses[:n])), float(np.var(losses[:n]))
        else:  # exponential weights 1 - 1/window from then on
            a = 1.0 / window
            mean, var = mean + a * (x - mean), (1 - a) * (var + a * (x - mean) ** 2)
        assert r.mean == pytest.approx(mean) and r.var == pytest.approx(var), n
    assert r.std == pytest.approx(math.sqrt(var))


def test_shard_state_round_trip_continues_identically():
    cfg = ShardConfig(optimizer="adagrad", lr=0.1, outlier_std=3.0)
    a = ParameterShard(0, np.arange(4, dtype=np.float32), cfg)
    gen = np.random.default_rng(0)
    for _ in range(3):
        a.push(gen.normal(size=4).astype(np.float32), a.version, loss=float(gen.uniform()))
    b = ParameterShard(0, np.zeros(4, np.float32), cfg)
    b.load_state(a.state())
    g = gen.normal(size=4).astype(np.float32)
    assert a.push(g, 3, loss=0.5) == b.push(g, 3, loss=0.5)
    assert torch.equal(a.param, b.param) and a.version == b.version == 4
    assert b.pull(3)[0] == 4


def test_adagrad_matches_torch_optim_adagrad():
    torch.manual_seed(0)
    a, b = _net(), _net()
    b.load_state_dict(a.state_dict())
    ours = Adagrad(a.parameters(), lr=0.1, eps=1e-10, initial_accumulator_value=0.1)
    ref = torch.optim.Adagrad(b.parameters(), lr=0.1, eps=1e-10, initial_accumulator_value=0.1)
    x = torch.randn(16, 4)
    for step in range(20):
        for net, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            out = net(x)
            loss = out.pow(2).mean() if step % 3 else out.sum()
            loss.backward()
            if step == 5:  # a parameter without a gradient keeps its state, as in torch
                net[2].bias.grad = None
            opt.step()
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    assert isinstance(make_optimizer("adagrad", a.parameters(), 0.1), Adagrad)
