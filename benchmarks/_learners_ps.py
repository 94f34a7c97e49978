"""The sharded parameter server's throughput: applied gradients per second with 1, 2 and 4 shards.

    python benchmarks/_learners_ps.py                          # Ray, 2 pushers, 1M parameters, 1/2/4 shards
    python benchmarks/_learners_ps.py --params 17410 --seconds 5
    python benchmarks/_learners_ps.py --backend threaded

Each point places S shard nodes (``shoal.services.parameter_server``) holding a parameter
vector of ``--params`` float32 values (AdaGrad, no filters) and P pusher nodes that loop
as a GORILA learner does, minus the gradient computation: push one precomputed gradient
and take the shards' newest slices back with the reply. The figure is whole gradients applied per
second (every shard applied its slice), measured by the shards' own counters over
``--seconds`` after a warm-up. On Ray every shard and every pusher is its own process.
``benchmarks/learners.py`` prints these rows with its own figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.services.parameter_server import ParameterServerClient, ShardConfig, spawn_shards  # noqa: E402


class _Vector(nn.Module):
    """A module that is one parameter vector of ``size`` values."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(size))


class _Pusher:
    """Pulls and pushes in a loop, as a learner would, with a fixed gradient."""

    def __init__(self, shards: list[Any], size: int, seed: int) -> None:
        torch.set_num_threads(1)
        self.client = ParameterServerClient(shards, _Vector(size))
        self.grad = torch.randn(size, generator=torch.Generator().manual_seed(seed))

    def run(self, seconds: float) -> int:
        """Push for ``seconds``; the number of pushes."""
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            self.client.push(self.grad, loss=1.0, pull=True)  # one round trip: push, get the newest slices back
            n += 1
        return n


def _make_backend(name: str, num_cpus: int) -> Any:
    if name == "ray":
        from ray import cloudpickle

        from shoal.backends.ray import RayBackend

        if __name__ != "__main__":  # imported (by learners.py): ship this module's node classes by value
            cloudpickle.register_pickle_by_value(sys.modules[__name__])
        return RayBackend(num_cpus=num_cpus)
    from shoal.backends.threaded import ThreadedBackend

    return ThreadedBackend()


def measure(num_shards: int, size: int, pushers: int, seconds: float, backend_name: str,
            warmup_s: float = 1.0) -> dict[str, Any]:
    """One point: whole gradients applied per second by ``num_shards`` shards fed by ``pushers`` pushers."""
    backend = _make_backend(backend_name, num_cpus=pushers + num_shards + 1)
    try:
        shards = spawn_shards(backend, _Vector(size), num_shards, ShardConfig(optimizer="adagrad", lr=1e-3))
        nodes = [backend.spawn(_Pusher, shards, size, i, name=f"pusher-{i}") for i in range(pushers)]
        backend.get([p.call("run", warmup_s) for p in nodes])
        before = backend.get([s.call("metrics") for s in shards])
        t0 = time.monotonic()
        backend.get([p.call("run", seconds) for p in nodes])
        elapsed = time.monotonic() - t0
        after = backend.get([s.call("metrics") for s in shards])
    finally:
        backend.shutdown()
    applied = min(a["applied"] - b["applied"] for a, b in zip(after, before))  # whole gradients: every shard's slice
    return {"figure": "parameter_server_applied_gradients_per_s", "backend": backend_name, "shards": num_shards,
            "pushers": pushers, "params": size, "seconds": round(elapsed, 2),
            "applied_gradients_per_s": round(applied / elapsed, 1)}


def parameter_server_figures(shards: tuple[int, ...] = (1, 2, 4), size: int = 1_000_000, pushers: int = 2,
                             seconds: float = 10.0, backend: str = "ray") -> list[dict[str, Any]]:
    """Applied gradients per second at each shard count (one row per count)."""
    return [measure(s, size, pushers, seconds, backend) for s in shards]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--params", type=int, default=1_000_000, help="parameters held by the server")
    ap.add_argument("--pushers", type=int, default=2, help="learner-like nodes pushing gradients")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--backend", choices=["ray", "threaded"], default="ray")
    a = ap.parse_args()
    print(f"parameter server: {a.params:,} float32 parameters, {a.pushers} pushers, backend {a.backend}")
    print(f"{'shards':>6}  {'applied gradients/s':>20}")
    for row in parameter_server_figures(tuple(a.shards), a.params, a.pushers, a.seconds, a.backend):
        print(f"{row['shards']:>6}  {row['applied_gradients_per_s']:>20,.1f}")


if __name__ == "__main__":
    main()
