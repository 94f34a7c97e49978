"""Hand-written MLP passes and SAC gradients against autograd through plain torch layers.

The SAC gradients are checked as gradients (not only through Adam steps, which a positive
factor on a gradient cannot change): the critics', the policy's and the temperature's flat
``.grad`` after one hand-written gradient computation, against plain autograd of SAC's
losses written out here from their definition, in float64, on the same batch and noise.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal
from torch.distributions.transforms import TanhTransform

from shoal.agents.continuous import fused as passes
from shoal.agents.continuous import networks
from shoal.agents.continuous.builder import ContinuousBuilder
from shoal.agents.continuous.config import SACConfig
from shoal.agents.continuous.fused import Workspace, ensemble_relu_mlp, relu_mlp
from shoal.agents.continuous.networks import ContinuousNetworks
from shoal.core.types import EnvSpec
from shoal.envs.make import env_spec
from shoal.nets.heads import LOG_STD_MAX, LOG_STD_MIN

B = 32
RTOL = 1e-5  # relative error allowed between the float32 gradients and the float64 reference


@pytest.fixture(params=[pytest.param((False, 0), id="torch"), pytest.param((True, 1), id="onednn-all"),
                        pytest.param((True, 1500), id="onednn-large")])
def matmuls(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The passes' products in torch's kernels, all in oneDNN (asserted to have run), or only those of at
    least 1500 MACs (at ``B=32`` mostly the hidden-to-hidden ones: mixed as at 256 units and batch 256)."""
    on, min_macs = request.param
    if on and passes._LINEAR is None:
        pytest.skip("this torch build has no oneDNN linear")
    calls = []
    linear = passes._LINEAR

    def counted(*args: Any) -> torch.Tensor:
        calls.append(1)
        return linear(*args)
    monkeypatch.setattr(passes, "ONEDNN", on)
    monkeypatch.setattr(passes, "ONEDNN_MIN_MACS", min_macs)
    monkeypatch.setattr(passes, "_LINEAR", counted if on else linear)
    yield
    assert bool(calls) == on or min_macs > 1


def test_onednn_takes_large_float32_cpu_products_outside_autograd_whatever_the_process_allocator(
        monkeypatch: pytest.MonkeyPatch) -> None:
    if passes._LINEAR is None:
        pytest.skip("this torch build has no oneDNN linear")
    from shoal.core import memory

    x = torch.zeros(1)
    n = round(passes.ONEDNN_MIN_MACS ** (1 / 3))
    with torch.no_grad():
        assert passes.use_onednn(x, n, n, n)
        monkeypatch.setattr(memory, "_RETAINED", True)  # as in `shoal train` and Ray nodes: the same kernels
        assert passes.use_onednn(x, n, n, n)
        assert not passes.use_onednn(x, n, n, n - 1)  # too small
        assert not passes.use_onednn(x.double(), n, n, n)
        monkeypatch.setattr(passes, "ONEDNN", False)
        assert not passes.use_onednn(x, n, n, n)
        monkeypatch.setattr(passes, "ONEDNN", True)
    assert not passes.use_onednn(x, n, n, n)  # autograd on: oneDNN's linear has no derivative here
    w, b = torch.randn(5, 3), torch.randn(5)
    x = torch.randn(4, 3)
    with torch.no_grad():
        assert torch.allclose(passes.matmul_nt(x, w, b, relu=True), torch.relu(x @ w.t() + b), atol=1e-6)
        y = torch.randn(4, 5)
        assert torch.allclose(passes.matmul_nt(x.t(), y.t()), x.t() @ y, atol=1e-6)  # strided operands


def _ensemble_params(dims: list[int], k: int, gen: torch.Generator) -> list[torch.Tensor]:
    ps = []
    for i, o in zip(dims[:-1], dims[1:]):
        ps += [torch.randn(k, i, o, generator=gen).requires_grad_(), torch.randn(k, 1, o, generator=gen).requires_grad_()]
    return ps


def _plain_ensemble(x: torch.Tensor, ps: list[torch.Tensor]) -> torch.Tensor:
    h = x.expand(ps[0].shape[0], *x.shape)
    for j in range(0, len(ps), 2):
        h = torch.baddbmm(ps[j + 1], h, ps[j])
        if j + 2 < len(ps):
            h = F.relu(h)
    return h


@pytest.mark.parametrize("dims,k", [([5, 8, 1], 2), ([5, 8, 7, 1], 3), ([5, 8, 6, 3], 1)])
@pytest.mark.parametrize("grads", ["weights", "input", "both"])
def test_ensemble_relu_mlp_matches_autograd_through_plain_layers(dims, k, grads, matmuls) -> None:
    gen = torch.Generator().manual_seed(0)
    ps = _ensemble_params(dims, k, gen)
    x = torch.randn(B, dims[0], generator=gen)
    if grads == "input":
        ps = [p.detach() for p in ps]
    outs, got = [], []
    for fn in (_plain_ensemble, ensemble_relu_mlp):
        xi = x.clone().requires_grad_(grads != "weights")
        out = fn(xi, ps)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        leaves = ([xi] if grads != "weights" else []) + ([p for p in ps if p.requires_grad])
        outs.append(out)
        got.append(torch.autograd.grad(out, leaves, g))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert len(got[0]) == len(got[1]) > 0
    for a, b in zip(*got):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


@pytest.mark.parametrize("dims", [[3, 8, 2], [3, 8, 8, 4]])
def test_relu_mlp_matches_autograd_through_nn_linear(dims, matmuls) -> None:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:])]
    params = [t for lin in layers for t in (lin.weight, lin.bias)]
    x = torch.randn(B, dims[0])
    outs, got = [], []
    for fused in (False, True):
        xi = x.clone().requires_grad_()
        if fused:
            out = relu_mlp(xi, params)
        else:
            out = xi
            for j, lin in enumerate(layers):
                out = lin(out) if j == len(layers) - 1 else F.relu(lin(out))
        outs.append(out)
        got.append(torch.autograd.grad(out, [xi, *params], torch.ones_like(out) * torch.arange(out.shape[-1])))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    for a, b in zip(*got):
        assert torch.allclose(a, b, atol=1e-5)


def test_workspace_reuses_storage_while_the_shape_holds() -> None:
    ws = Workspace()
    like = torch.zeros(1)
    a = ws("h", (4, 3), like)
    assert ws("h", (4, 3), like).data_ptr() == a.data_ptr()
    assert ws("h", (5, 3), like).shape == (5, 3)
    assert ws("g", (4, 3), like).data_ptr() != ws("h", (5, 3), like).data_ptr()


def _items(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"obs": rng.standard_normal((n, 3), dtype=np.float32),
            "action": rng.uniform(-1, 1, (n, 1)).astype(np.float32),
            "reward": rng.standard_normal(n, dtype=np.float32),
            "discount": rng.choice([0.0, 0.99], n).astype(np.float32),
            "next_obs": rng.standard_normal((n, 3), dtype=np.float32)}


@pytest.mark.parametrize("overrides", [
    {},
    {"num_critics": 1, "hidden": (8, 8, 8), "autotune": False},
    {"num_critics": 3, "prioritized": True, "policy_delay": 2, "max_grad_norm": 0.5},
])
def test_fused_sac_step_matches_the_autograd_path(overrides, matmuls) -> None:
    cfg = SACConfig(**{"hidden": (16, 16), "batch_size": B, "actor_lr": 3e-3, "critic_lr": 2e-3, "alpha_lr": 1e-2,
                       "tau": 0.1, **overrides})
    runs = []
    for fused in (True, False):
        b = ContinuousBuilder(cfg, env_spec("Pendulum-v1"), total_steps=1000, seed=3)
        torch.manual_seed(0)  # the same initial weights on both sides
        net = b.make_networks()
        tables = b.make_tables()
        learner = b.make_learner(net, tables)
        assert learner.fused is not None
        if not fused:
            _make_plain(learner)
        tables["replay"].insert(_items(4 * B))
        with contextlib.nullcontext() if fused else _fused_layers_forbidden():
            metrics = [learner.step() for _ in range(4)]
        runs.append((net, metrics, tables["replay"]))
    (net_f, m_f, table_f), (net_a, m_a, table_a) = runs
    for k, v in net_f.state_dict().items():
        assert torch.allclose(v, net_a.state_dict()[k], atol=1e-5), k
    for a, b in zip(m_f, m_a):
        assert set(a) == set(b) == {"loss_critic", "q", "alpha", "loss_actor", "entropy", "nonfinite_updates"}
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5), k
    if cfg.prioritized:
        keys = np.arange(len(table_f))
        assert np.allclose(table_f.selector.tree.get(keys), table_a.selector.tree.get(keys), atol=1e-5)


def test_fused_sac_step_does_not_hold_workspace_tensors_in_its_results() -> None:
    cfg = SACConfig(hidden=(16, 16), batch_size=B)
    b = ContinuousBuilder(cfg, env_spec("Pendulum-v1"), total_steps=1000, seed=3)
    tables = b.make_tables()
    learner = b.make_learner(b.make_networks(), tables)
    tables["replay"].insert(_items(4 * B))
    first = learner.step()
    kept = copy.deepcopy(first)
    learner.step()
    for k, v in first.items():
        assert torch.equal(v, kept[k]), k


# -- SAC's gradients against a plain-autograd reference ------------------------------------------

OBS_DIM, ACT_DIM = 5, 3
SPEC = EnvSpec("box", (OBS_DIM,), np.dtype(np.float32), False, ACT_DIM, np.full(ACT_DIM, -1.0, np.float32),
               np.full(ACT_DIM, 1.0, np.float32))
#: SAC's log-std bounds (Haarnoja et al.'s reference implementation), written out to check the library's.
SAC_LOG_STD_MIN, SAC_LOG_STD_MAX = -20.0, 2.0


@contextlib.contextmanager
def _fused_layers_forbidden() -> Iterator[None]:
    """Any network call that would run through fused.py's layers raises inside this block."""
    def forbidden(*args: Any) -> torch.Tensor:
        raise AssertionError("the plain reference ran a fused layer")
    with mock.patch.object(networks, "relu_mlp", forbidden), mock.patch.object(networks, "ensemble_relu_mlp",
                                                                               forbidden):
        yield


def _make_plain(learner: Any) -> None:
    """Send ``learner`` down its autograd path with plain torch layers (nothing of fused.py)."""
    net = learner.net
    learner.fused = None
    net.critic.relu = net.critic_target.relu = False
    net.policy.linears = None


def _sac_items(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"obs": rng.standard_normal((n, OBS_DIM), dtype=np.float32),
            "action": rng.uniform(-1, 1, (n, ACT_DIM)).astype(np.float32),
            "reward": rng.standard_normal(n, dtype=np.float32),
            "discount": rng.choice([0.0, 0.99], n).astype(np.float32),
            "next_obs": rng.standard_normal((n, OBS_DIM), dtype=np.float32)}


def _sac_networks(cfg: SACConfig, log_std_shift: float) -> ContinuousNetworks:
    """SAC networks on :data:`SPEC` whose policy's log-std bias is moved by ``log_std_shift``."""
    torch.manual_seed(0)
    net = ContinuousBuilder(cfg, SPEC, total_steps=1000, seed=3).make_networks()
    last = net.policy.net[-1]
    assert isinstance(last, nn.Linear) and last.out_features == 2 * ACT_DIM
    with torch.no_grad():
        last.bias[ACT_DIM:] += log_std_shift
        # Critics unlike their targets (they start equal), so the two sides of the TD error differ.
        for p in net.critic_target.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return net


class _PlainSAC:
    """SAC's three losses from their definition on float64 copies of ``net``'s weights, by plain autograd.

    The critics run member by member as ``x @ W_j + b_j`` with ReLUs, the policy as
    ``nn.Linear`` layers; ``log pi`` is ``torch.distributions``' Normal log-density minus
    its TanhTransform log-Jacobian. Nothing here calls shoal's SAC code.
    """

    def __init__(self, net: ContinuousNetworks, num_critics: int) -> None:
        dt = torch.float64
        self.k = num_critics
        self.critic = [(layer.weight.detach().to(dt).clone().requires_grad_(),
                        layer.bias.detach().to(dt).clone().requires_grad_()) for layer in net.critic.layers]
        self.critic_target = [(layer.weight.detach().to(dt).clone(), layer.bias.detach().to(dt).clone())
                              for layer in net.critic_target.layers]
        self.policy = []
        for m in net.policy.net:
            if isinstance(m, nn.Linear):
                lin = nn.Linear(m.in_features, m.out_features, dtype=dt)
                with torch.no_grad():
                    lin.weight.copy_(m.weight)
                    lin.bias.copy_(m.bias)
                self.policy.append(lin)
        assert net.log_alpha is not None
        self.log_alpha = net.log_alpha.detach().to(dt).clone().requires_grad_()

    def q(self, params: list[tuple[torch.Tensor, torch.Tensor]], obs: torch.Tensor, action: torch.Tensor,
          detach: bool = False) -> torch.Tensor:
        """``[k, B]``: each critic on its own."""
        x = torch.cat([obs, action], -1)
        out = []
        for j in range(self.k):
            h = x
            for i, (w, b) in enumerate(params):
                wj, bj = (w[j].detach(), b[j, 0].detach()) if detach else (w[j], b[j, 0])
                h = h @ wj + bj
                if i < len(params) - 1:
                    h = torch.relu(h)
            out.append(h[:, 0])
        return torch.stack(out)

    def raw_log_std(self, obs: torch.Tensor) -> torch.Tensor:
        return self._policy_out(obs)[:, ACT_DIM:]

    def _policy_out(self, obs: torch.Tensor) -> torch.Tensor:
        h = obs
        for i, lin in enumerate(self.policy):
            h = lin(h)
            if i < len(self.policy) - 1:
                h = torch.relu(h)
        return h

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``a = tanh(mean + std * noise)`` and ``log pi(a|s)``."""
        out = self._policy_out(obs)
        mean, log_std = out[:, :ACT_DIM], out[:, ACT_DIM:].clamp(SAC_LOG_STD_MIN, SAC_LOG_STD_MAX)
        u = mean + log_std.exp() * noise
        a = torch.tanh(u)
        log_prob = Normal(mean, log_std.exp()).log_prob(u).sum(-1) - TanhTransform().log_abs_det_jacobian(u, a).sum(-1)
        return a, log_prob

    def gradients(self, batch: dict[str, torch.Tensor], weights: torch.Tensor | None, next_noise: torch.Tensor,
                  noise: torch.Tensor, target_entropy: float) -> dict[str, list[torch.Tensor]]:
        """``{"critic", "policy", "alpha"}``: the gradients, per parameter, in the networks' parameter order."""
        b = {k: v.double() for k, v in batch.items()}
        w = torch.ones_like(b["reward"]) if weights is None else weights.double()
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_a, next_lp = self.sample(b["next_obs"], next_noise.double())
            next_q = self.q(self.critic_target, b["next_obs"], next_a).min(0).values
            y = b["reward"] + b["discount"] * (next_q - alpha * next_lp)
        q = self.q(self.critic, b["obs"], b["action"])
        loss_critic = (0.5 * (w * (q - y) ** 2).mean(-1)).sum()
        a, log_prob = self.sample(b["obs"], noise.double())
        loss_policy = (alpha * log_prob - self.q(self.critic, b["obs"], a, detach=True).min(0).values).mean()
        loss_alpha = -(self.log_alpha * (log_prob.detach() + target_entropy)).mean()
        critic_params = [t for wb in self.critic for t in wb]
        policy_params = [t for lin in self.policy for t in (lin.weight, lin.bias)]
        return {"critic": list(torch.autograd.grad(loss_critic, critic_params)),
                "policy": list(torch.autograd.grad(loss_policy, policy_params)),
                "alpha": list(torch.autograd.grad(loss_alpha, [self.log_alpha]))}


def _assert_rel_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """``|got - want| <= RTOL * |want|`` in the 2-norm (so an all-zero ``want`` needs an all-zero ``got``)."""
    assert got.shape == want.shape, what
    err, scale = (got.double() - want).norm().item(), want.norm().item()
    assert err <= RTOL * scale, f"{what}: |got - want| = {err:.3g}, |want| = {scale:.3g}"


def _assert_gradients_match(net: ContinuousNetworks, flat_grads: dict[str, torch.Tensor],
                            ref: dict[str, list[torch.Tensor]]) -> None:
    """Each parameter's gradient (a view of ``flat_grads``) against the reference, the policy's last layer split
    into its mean and log-std rows (the clamp acts on the latter only)."""
    modules = {"critic": net.critic, "policy": net.policy}
    for name in ("critic", "policy"):
        offset = 0
        params = list(modules[name].parameters())
        assert len(params) == len(ref[name])
        for i, (p, want) in enumerate(zip(params, ref[name])):
            got = flat_grads[name][offset:offset + p.numel()].view_as(p)
            offset += p.numel()
            _assert_rel_close(got, want, f"{name} parameter {i}")
            if name == "policy" and i >= len(params) - 2:  # the last layer: mean rows, then log-std rows
                _assert_rel_close(got[:ACT_DIM], want[:ACT_DIM], f"policy parameter {i}, mean rows")
                _assert_rel_close(got[ACT_DIM:], want[ACT_DIM:], f"policy parameter {i}, log-std rows")
        assert offset == flat_grads[name].numel()
        _assert_rel_close(flat_grads[name], torch.cat([g.reshape(-1) for g in ref[name]]), f"{name} (flat)")
    _assert_rel_close(flat_grads["alpha"], ref["alpha"][0].reshape(1), "log_alpha")


def _check_clamp(plain: _PlainSAC, obs: torch.Tensor, log_std_shift: float) -> None:
    """The shifted cases do reach the clamp: +2 for some samples, -23 for all, none unshifted."""
    assert (LOG_STD_MIN, LOG_STD_MAX) == (SAC_LOG_STD_MIN, SAC_LOG_STD_MAX)
    with torch.no_grad():
        raw = plain.raw_log_std(obs.double())
    outside = ((raw < SAC_LOG_STD_MIN) | (raw > SAC_LOG_STD_MAX)).double().mean().item()
    if log_std_shift == 0:
        assert outside == 0
    elif log_std_shift > 0:
        assert 0.03 < outside < 1, outside
    else:
        assert outside == 1


SAC_CASES = [
    pytest.param({}, False, id="twin"),
    pytest.param({"num_critics": 1, "hidden": (8, 8, 8), "autotune": False}, True, id="one-critic-weighted"),
    pytest.param({"num_critics": 3, "hidden": (16, 12)}, True, id="three-critics-weighted"),
]
SHIFTS = [pytest.param(0.0, id="unclamped"), pytest.param(2.0, id="clamp-max"), pytest.param(-23.0, id="clamp-min")]


@pytest.mark.parametrize("log_std_shift", SHIFTS)
@pytest.mark.parametrize("overrides,weighted", SAC_CASES)
def test_fused_sac_gradients_equal_plain_autograd_of_the_sac_losses(overrides, weighted, log_std_shift, matmuls) -> None:
    cfg = SACConfig(**{"hidden": (16, 16), "batch_size": B, **overrides})
    net = _sac_networks(cfg, log_std_shift)
    learner = ContinuousBuilder(cfg, SPEC, total_steps=1000, seed=3).make_learner(net, {"replay": None})
    assert learner.fused is not None
    plain = _PlainSAC(net, cfg.num_critics)  # the weights before anything runs
    batch = {k: torch.from_numpy(v) for k, v in _sac_items(B).items()}
    weights = torch.from_numpy(np.random.default_rng(1).uniform(0.2, 1.0, B).astype(np.float32)) if weighted else None
    target_entropy = -float(ACT_DIM) if cfg.autotune else None
    # Stale values in every gradient buffer: the critics' and policy's must be overwritten; the
    # temperature's too, unless it is not tuned (then it must stay as it was).
    for flat in (learner.critic, learner.policy, learner.alpha):
        flat.grad.fill_(7.0)
    gen = torch.Generator().manual_seed(11)
    replay_noise = torch.Generator().manual_seed(11)
    alpha = net.log_alpha.detach().exp()
    learner.fused(batch["obs"], batch["action"], batch["reward"], batch["discount"], batch["next_obs"], weights,
                  alpha, gen, True, target_entropy)
    # The step draws the target's noise, then the policy's: the same draws for the reference.
    next_noise = torch.randn((B, ACT_DIM), generator=replay_noise)
    noise = torch.randn((B, ACT_DIM), generator=replay_noise)
    assert torch.equal(gen.get_state(), replay_noise.get_state())  # and no other draws
    ref = plain.gradients(batch, weights, next_noise, noise, -float(ACT_DIM))
    _check_clamp(plain, torch.cat([batch["obs"], batch["next_obs"]]), log_std_shift)
    if target_entropy is None:
        assert torch.equal(learner.alpha.grad, torch.full((1,), 7.0))
        ref["alpha"] = [torch.full((), 7.0, dtype=torch.float64)]
    _assert_gradients_match(net, {"critic": learner.critic.grad, "policy": learner.policy.grad,
                                  "alpha": learner.alpha.grad}, ref)


def test_fused_sac_critic_only_step_leaves_policy_and_temperature_gradients() -> None:
    cfg = SACConfig(hidden=(16, 16), batch_size=B)
    net = _sac_networks(cfg, 0.0)
    learner = ContinuousBuilder(cfg, SPEC, total_steps=1000, seed=3).make_learner(net, {"replay": None})
    plain = _PlainSAC(net, cfg.num_critics)
    batch = {k: torch.from_numpy(v) for k, v in _sac_items(B).items()}
    for flat in (learner.critic, learner.policy, learner.alpha):
        flat.grad.fill_(7.0)
    gen = torch.Generator().manual_seed(11)
    learner.fused(batch["obs"], batch["action"], batch["reward"], batch["discount"], batch["next_obs"], None,
                  net.log_alpha.detach().exp(), gen, False, -float(ACT_DIM))
    replay_noise = torch.Generator().manual_seed(11)
    next_noise = torch.randn((B, ACT_DIM), generator=replay_noise)
    assert torch.equal(gen.get_state(), replay_noise.get_state())  # the target's noise only
    ref = plain.gradients(batch, None, next_noise, torch.zeros(B, ACT_DIM), -float(ACT_DIM))
    _assert_rel_close(learner.critic.grad, torch.cat([g.reshape(-1) for g in ref["critic"]]), "critic")
    assert torch.equal(learner.policy.grad, torch.full_like(learner.policy.grad, 7.0))
    assert torch.equal(learner.alpha.grad, torch.full_like(learner.alpha.grad, 7.0))


class _FixedTable:
    """A replay stand-in that hands the learner the same batch every time (uniform: probabilities 1/n)."""

    def __init__(self, items: dict[str, np.ndarray]) -> None:
        self.items, self.n = items, len(items["reward"])

    def try_sample(self, n: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        assert n == self.n
        return self.items, np.arange(n), np.full(n, 1.0 / n)

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        pass

    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize("log_std_shift", SHIFTS)
@pytest.mark.parametrize("path", ["fused", "autograd"])
def test_sac_learner_step_hands_adam_the_gradients_of_the_sac_losses(path, log_std_shift) -> None:
    """What each optimiser steps on, in a whole learner step, on either gradient path."""
    cfg = SACConfig(hidden=(16, 16), batch_size=B)
    net = _sac_networks(cfg, log_std_shift)
    items = _sac_items(B)
    learner = ContinuousBuilder(cfg, SPEC, total_steps=1000, seed=3).make_learner(net, {"replay": _FixedTable(items)})
    assert learner.fused is not None
    if path == "autograd":
        _make_plain(learner)
    plain = _PlainSAC(net, cfg.num_critics)
    replay_noise = torch.Generator().manual_seed(learner.gen.initial_seed())
    seen: dict[str, torch.Tensor] = {}
    for name in ("critic", "policy", "alpha"):
        flat, opt = getattr(learner, name), getattr(learner, f"{name}_opt")
        step = opt.step

        def record(*args: Any, _name: str = name, _flat: Any = flat, _step: Any = step) -> Any:
            seen[_name] = _flat.grad.clone()
            return _step(*args)
        opt.step = record
    with contextlib.nullcontext() if path == "fused" else _fused_layers_forbidden():
        metrics = learner.step()
    assert set(seen) == {"critic", "policy", "alpha"} and "loss_actor" in metrics
    next_noise = torch.randn((B, ACT_DIM), generator=replay_noise)
    noise = torch.randn((B, ACT_DIM), generator=replay_noise)
    ref = plain.gradients({k: torch.from_numpy(v) for k, v in items.items()}, None, next_noise, noise,
                          -float(ACT_DIM))
    _assert_gradients_match(net, seen, ref)
