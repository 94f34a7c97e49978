"""A sharded parameter server: S shard nodes, each holding one slice of the flat parameters.

The parameters of a network, flattened in ``parameters()`` order, are cut into S
contiguous slices (:func:`shard_bounds`). Each :class:`ParameterShard` node holds its
slice and the optimiser state of that slice, applies pushed gradient slices one at a time
and serves its slice as a versioned snapshot; its version grows by one per applied
gradient. A :class:`ParameterServerClient` (in a learner or an actor) splits a flat
gradient into slices, pushes each to its shard directly, and reassembles the full
parameters from the shards' snapshots.

Every shard filters what it is pushed (GORILA, Nair et al. 2015): a gradient slice computed
on a version more than ``max_staleness`` versions older than the shard's is dropped, and so
is one whose loss lies more than ``outlier_std`` standard deviations above the running mean
of pushed losses; both are counted. A slice holding a NaN or inf is dropped as an outlier too
(counted also as ``dropped_nonfinite``): it would make the shard's parameters NaN. Shards decide on their own (there is no global lock), as
in the paper's asynchronous server.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from shoal.config import positive, require
from shoal.core import store
from shoal.nets.optim import load_optimizer_state, make_optimizer, optimizer_state
from shoal.services.variables import VariableServer

APPLIED, STALE, OUTLIER = "applied", "stale", "outlier"


@dataclass
class ShardConfig:
    """How every shard applies and filters gradients."""

    optimizer: str = "adagrad"
    """Optimiser each shard runs on its slice: adagrad (GORILA's), adam, rmsprop or sgd."""
    lr: float = 0.01
    """Learning rate of the shards' optimiser."""
    eps: float = 1e-10
    """Epsilon of the optimiser's denominator."""
    max_staleness: int = 0
    """Drop a gradient computed on a version more than this many versions older than the shard's (0: keep all)."""
    outlier_std: float = 0.0
    """Drop a gradient whose loss exceeds the running mean by more than this many standard deviations (0: keep all)."""
    outlier_warmup: int = 20
    """Losses seen before the outlier filter starts to drop."""
    loss_window: int = 100
    """Pushes the running loss mean and variance average over (exponential weights 1 - 1/window)."""

    def __post_init__(self) -> None:
        require(self.optimizer in ("adagrad", "adam", "rmsprop", "sgd"),
                f"optimizer must be adagrad, adam, rmsprop or sgd, got {self.optimizer!r}")
        positive(self, "lr", "eps", "loss_window")
        require(self.max_staleness >= 0, f"max_staleness must be >= 0 (0: off), got {self.max_staleness}")
        require(self.outlier_std >= 0, f"outlier_std must be >= 0 (0: off), got {self.outlier_std}")
        require(self.outlier_warmup >= 1, f"outlier_warmup must be >= 1, got {self.outlier_warmup}")


def shard_bounds(size: int, num_shards: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each of ``num_shards`` contiguous slices of a vector of ``size`` (sizes differ by at most 1)."""
    if not 1 <= num_shards <= size:
        raise ValueError(f"cannot cut {size} parameters into {num_shards} shards; use 1 to {size} shards")
    cuts = [size * i // num_shards for i in range(num_shards + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def flat_parameters(net: nn.Module) -> torch.Tensor:
    """Every parameter of ``net`` in one flat float32 CPU vector (a copy)."""
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in net.parameters()])


class RunningLoss:
    """Exponentially weighted running mean and variance of losses (exact averages for the first ``window``)."""

    def __init__(self, window: int) -> None:
        self.window = int(window)
        self.count = 0
        self.mean = 0.0
        self.var = 0.0

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))

    def is_outlier(self, loss: float, k: float, warmup: int) -> bool:
        """Whether ``loss`` lies more than ``k`` standard deviations above the mean (never during warm-up)."""
        return k > 0 and self.count >= warmup and loss > self.mean + k * self.std

    def update(self, loss: float) -> None:
        self.count += 1
        a = max(1.0 / self.count, 1.0 / self.window)
        d = loss - self.mean
        self.mean += a * d
        self.var = (1.0 - a) * (self.var + a * d * d)

    def state(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "var": self.var}

    def load_state(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.var = int(state["count"]), float(state["mean"]), float(state["var"])


class ParameterShard:
    """One shard: a slice of the parameters, its optimiser state and a version; thread safe.

    Gradients are applied one at a time (under a lock) in arrival order. The newest slice is
    packed and stored for readers only when one asks for a version newer than the stored one.
    """

    def __init__(self, shard_id: int, values: np.ndarray | torch.Tensor, config: ShardConfig) -> None:
        self.shard_id = shard_id
        self.settings = config
        self.param = nn.Parameter(torch.as_tensor(np.array(values, dtype=np.float32, copy=True)))
        self.opt = make_optimizer(config.optimizer, [self.param], config.lr, config.eps)
        self.version = 0
        self.losses = RunningLoss(config.loss_window)
        self.applied = self.dropped_stale = self.dropped_outlier = 0
        self.dropped_nonfinite = 0  # of dropped_outlier: slices holding a NaN or inf (not checkpointed)
        self.env_steps = 0
        self._staleness: list[int] = []
        self._lock = threading.Lock()
        self.variables = VariableServer()

    @property
    def size(self) -> int:
        return int(self.param.numel())

    def push(self, grad: np.ndarray | torch.Tensor, base_version: int, loss: float = float("nan"),
             env_steps: int = 0) -> tuple[str, int]:
        """Apply a gradient slice computed on ``base_version`` unless stale or an outlier; ``(outcome, version)``."""
        g = torch.as_tensor(np.array(grad, dtype=np.float32, copy=True)).reshape(-1)
        if g.numel() != self.size:
            raise ValueError(f"shard {self.shard_id} holds {self.size} parameters, got a gradient of {g.numel()}")
        c = self.settings
        with self._lock:
            self.env_steps += int(env_steps)
            staleness = self.version - int(base_version)
            self._staleness.append(staleness)
            finite = math.isfinite(loss)
            if c.max_staleness > 0 and staleness > c.max_staleness:
                outcome = STALE
                self.dropped_stale += 1
            elif not bool(torch.isfinite(g).all()):
                outcome = OUTLIER
                self.dropped_outlier += 1
                self.dropped_nonfinite += 1
            elif finite and self.losses.is_outlier(loss, c.outlier_std, c.outlier_warmup):
                outcome = OUTLIER
                self.dropped_outlier += 1
            else:
                outcome = APPLIED
                self.param.grad = g
                self.opt.step()
                self.param.grad = None
                self.version += 1
                self.applied += 1
            if finite:  # every loss moves the statistics, so a lasting rise in the loss is soon accepted
                self.losses.update(float(loss))
            return outcome, self.version

    def pull(self, newer_than: int = -1) -> tuple[int, Any] | None:
        """``(version, reference to a snapshot {"p": slice})`` if the shard is newer than ``newer_than``, else None."""
        with self._lock:
            return self._newer(newer_than)

    def _newer(self, newer_than: int) -> tuple[int, Any] | None:
        if self.version <= newer_than:
            return None
        if self.variables.version < self.version:
            self.variables.publish({"p": self.param.detach()}, self.version)
        return self.variables.get_ref(newer_than)

    def push_pull(self, grad: np.ndarray | torch.Tensor, base_version: int, loss: float = float("nan"),
                  env_steps: int = 0) -> tuple[str, int, np.ndarray | None]:
        """:meth:`push`, then a copy of the slice if newer than ``base_version``: one round trip for a learner's step.

        The slice travels in the reply itself (one reader: no object-store round trip).
        """
        outcome, _ = self.push(grad, base_version, loss, env_steps)
        with self._lock:
            newer = self.version > base_version
            return outcome, self.version, self.param.detach().numpy().copy() if newer else None

    def values(self) -> tuple[int, np.ndarray]:
        """``(version, a copy of the slice)`` in the reply itself: for a caller outside the nodes' object store (the driver)."""
        with self._lock:
            return self.version, self.param.detach().numpy().copy()

    def pid(self) -> int:
        """The id of the process holding this shard."""
        return os.getpid()

    def metrics(self) -> dict[str, float]:
        """Counters, and the mean staleness of pushes since the last call."""
        with self._lock:
            st, self._staleness = self._staleness, []
            return {"version": float(self.version), "applied": float(self.applied),
                    "dropped_stale": float(self.dropped_stale), "dropped_outlier": float(self.dropped_outlier),
                    "dropped_nonfinite": float(self.dropped_nonfinite),
                    "staleness": float(np.mean(st)) if st else 0.0, "loss_mean": self.losses.mean,
                    "loss_std": self.losses.std}

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"param": self.param.detach().clone(), "optimizer": optimizer_state(self.opt),
                    "version": self.version, "applied": self.applied, "dropped_stale": self.dropped_stale,
                    "dropped_outlier": self.dropped_outlier, "env_steps": self.env_steps,
                    "losses": self.losses.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        with self._lock:
            with torch.no_grad():
                self.param.copy_(torch.as_tensor(state["param"]))
            load_optimizer_state(self.opt, state["optimizer"])
            self.version = int(state["version"])
            self.applied, self.env_steps = int(state["applied"]), int(state["env_steps"])
            self.dropped_stale, self.dropped_outlier = int(state["dropped_stale"]), int(state["dropped_outlier"])
            self.losses.load_state(state["losses"])
            self.variables = VariableServer()


def spawn_shards(backend: Any, net: nn.Module, num_shards: int, config: ShardConfig,
                 name: str = "shard") -> list[Any]:
    """Place ``num_shards`` shard nodes holding ``net``'s parameters; their handles, in slice order."""
    flat = flat_parameters(net).numpy()
    # Shards are servers (like queues and variable servers): they ask for no CPU of their own, but on
    # concurrent backends each serves its readers while a push is applied.
    return [backend.spawn(ParameterShard, i, flat[lo:hi], config, name=f"{name}-{i}", num_cpus=0,
                          concurrency=4 if backend.concurrent else 1)
            for i, (lo, hi) in enumerate(shard_bounds(flat.size, num_shards))]


class ParameterServerClient:
    """A learner's or actor's view of the shards: push gradients, pull and reassemble parameters.

    Keeps the newest slice of each shard it has seen and that slice's version; pushes are
    tagged with those versions, so each shard measures the staleness of its own slice.
    """

    def __init__(self, shards: Sequence[Any], net: nn.Module) -> None:
        self.shards = list(shards)
        self.flat = flat_parameters(net)
        self.bounds = shard_bounds(self.flat.numel(), len(self.shards))
        self.versions = [-1] * len(self.shards)
        self.outcomes = {APPLIED: 0, STALE: 0, OUTLIER: 0}

    def _adopt(self, i: int, ref: tuple[int, Any] | None) -> bool:
        if ref is None or ref[0] <= self.versions[i]:
            return False
        snap = store.get(ref[1])
        lo, hi = self.bounds[i]
        self.flat[lo:hi] = snap.tensors()["p"]
        self.versions[i] = snap.version
        return True

    def pull(self) -> bool:
        """Fetch every shard newer than the slice held (all shards asked at once); whether anything changed."""
        futures = [s.call("pull", v) for s, v in zip(self.shards, self.versions)]
        changed = [self._adopt(i, f.result()) for i, f in enumerate(futures)]
        return any(changed)

    def fetch(self) -> None:
        """Fetch every shard's slice in the replies (no object store: the driver's way to read the parameters)."""
        for i, f in enumerate([s.call("values") for s in self.shards]):
            version, values = f.result()
            lo, hi = self.bounds[i]
            self.flat[lo:hi] = torch.from_numpy(np.array(values, dtype=np.float32))
            self.versions[i] = int(version)

    def push(self, grad: torch.Tensor, loss: float = float("nan"), env_steps: int = 0, pull: bool = False) -> list[str]:
        """Push each slice of the flat ``grad`` to its shard (all at once); the shards' outcomes, in order.

        ``pull``: each shard answers with its newest slice too (one round trip for push and pull).
        """
        g = grad.detach().reshape(-1).float().cpu().numpy()
        if g.size != self.flat.numel():
            raise ValueError(f"gradient has {g.size} values, the parameters {self.flat.numel()}")
        method = "push_pull" if pull else "push"
        futures = [s.call(method, g[lo:hi], v, float(loss), int(env_steps))
                   for s, (lo, hi), v in zip(self.shards, self.bounds, self.versions)]
        replies = [f.result() for f in futures]
        if pull:
            for i, (_, version, values) in enumerate(replies):
                if values is not None and version > self.versions[i]:
                    lo, hi = self.bounds[i]
                    self.flat[lo:hi] = torch.from_numpy(np.array(values, dtype=np.float32))  # Ray's arrays are read-only
                    self.versions[i] = version
        outcomes = [r[0] for r in replies]
        for o in outcomes:
            self.outcomes[o] += 1
        return outcomes

    @property
    def mean_version(self) -> float:
        """The mean of the shard versions held: the server updates the held parameters include."""
        return float(np.mean(self.versions))

    def load_into(self, net: nn.Module) -> None:
        """Copy the reassembled parameters into ``net``'s parameters, in place (views of them stay valid)."""
        pos = 0
        with torch.no_grad():
            for p in net.parameters():
                k = p.numel()
                p.copy_(self.flat[pos:pos + k].view_as(p))
                pos += k

    def state_dict(self, net: nn.Module) -> dict[str, torch.Tensor]:
        """``net``'s state dict with the reassembled parameters in place of its own (copies)."""
        out = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        pos = 0
        for name, p in net.named_parameters():
            k = p.numel()
            out[name] = self.flat[pos:pos + k].reshape(p.shape).clone().to(out[name].dtype)
            pos += k
        return out
