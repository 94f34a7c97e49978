"""Collectives among learner ranks: one process group, gradients averaged as one flat buffer.

Several learner processes (ranks ``0..L-1``) join one ``torch.distributed`` process group
(gloo on the CPU, NCCL on GPUs) at a rendezvous address (the rank-0 host and its TCP store's port).
The group is an explicit object, not torch's process-wide default group, so nothing global
changes and several groups may live in one process (tests run ranks on threads).

A learner given a :class:`Collective` calls it where a single learner would act alone:
after ``backward`` (:meth:`Collective.average_gradients`: one all-reduce of every gradient
packed into one flat buffer, divided by ``L``) and wherever a statistic spans the whole batch
(advantage normalisation, observation statistics, the KL that adapts a penalty). With equal
shards of ``B/L`` samples the mean loss of the whole batch is the mean of the shards' mean
losses, so ``L`` ranks take the very step one learner takes on the whole batch.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist

from shoal.errors import ConfigError


@dataclass(frozen=True)
class Rendezvous:
    """Where the ranks of one learner group meet (part of each learner node's context)."""

    host: str
    """Address of the rank-0 host (it serves the group's TCP store)."""
    port: int
    """The port of the TCP store rank 0 serves on that host (see :func:`serve_store`)."""
    world_size: int
    """Number of learner ranks L."""
    backend: str = "gloo"
    """``gloo`` (CPU tensors) or ``nccl`` (CUDA tensors; needs one GPU per rank)."""
    timeout_s: float = 300.0
    """How long a collective (and joining the group) waits for the other ranks before failing."""


def host_address() -> str:
    """This host's address as other hosts reach it (the interface of the default route; loopback without one)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.254.254.254", 1))  # a UDP "connect" sends nothing; it only picks the outgoing interface
        return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        s.close()


def free_port(host: str = "") -> int:
    """A TCP port free on this host right now; another process may take it before it is bound
    (groups use :func:`serve_store` instead; this serves tests that place ranks on threads)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve_store(world_size: int, timeout_s: float = 300.0) -> tuple[Any, str, int]:
    """Rank 0's TCP store, listening on a port the system picked; returns ``(store, host address, port)``.

    Binding port 0 in the store itself leaves no window in which another process could take the port.
    """
    host = host_address()
    store = dist.TCPStore(host, 0, world_size, is_master=True, timeout=timedelta(seconds=timeout_s),
                          wait_for_workers=False)
    return store, host, int(store.port)


def group_backend(device: str) -> str:
    """The process-group backend for learners on ``device``: NCCL for CUDA, gloo otherwise."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def shard_bounds(total: int, rank: int, world_size: int, what: str = "batch") -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s equal share of ``total`` items; an error unless L divides it."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a group of {world_size}")
    if total % world_size:
        raise ConfigError(f"a {what} of {total} does not split into {world_size} equal learner shards; "
                          f"make it a multiple of num_learners={world_size}")
    n = total // world_size
    return rank * n, (rank + 1) * n


class Collective:
    """One rank's handle on its learner group's process group."""

    def __init__(self, rank: int, rendezvous: Rendezvous, device: torch.device | str = "cpu",
                 store: Any = None) -> None:
        """Join the group as ``rank`` (blocks until every rank has joined); ``device``: where this rank's tensors live.

        ``store``: rank 0's TCP store when it already serves it (see :func:`serve_store`), else one is made here.
        """
        if not dist.is_available():
            raise ConfigError("this torch build has no torch.distributed; use num_learners=1 or another torch build")
        self.rank, self.world_size = rank, rendezvous.world_size
        self.backend = rendezvous.backend
        self.device = torch.device(device)
        timeout = timedelta(seconds=rendezvous.timeout_s)
        if store is None:
            store = dist.TCPStore(rendezvous.host, rendezvous.port, rendezvous.world_size, is_master=rank == 0,
                                  timeout=timeout, wait_for_workers=False)
        self.group: Any  # a ProcessGroupGloo or ProcessGroupNCCL (torch's backend classes, used directly)
        if rendezvous.backend == "gloo":
            self.group = dist.ProcessGroupGloo(store, rank, self.world_size, timeout)
        elif rendezvous.backend == "nccl":
            # Untested unless two GPUs are present: one GPU per rank, each rank's tensors on its own device.
            if not dist.is_nccl_available():
                raise ConfigError("backend nccl needs a CUDA build of torch with NCCL; use device=cpu (gloo) instead")
            if self.device.index is not None:  # one host, several GPUs: this rank's own (Ray shows each rank one GPU)
                torch.cuda.set_device(self.device)
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            self.group = dist.ProcessGroupNCCL(store, rank, self.world_size, options)
        else:
            raise ConfigError(f"unknown process-group backend {rendezvous.backend!r}; use gloo or nccl")
        self._store = store  # the group reads it for as long as it lives
        self.reduce_seconds = 0.0
        """Seconds spent in :meth:`average_gradients` so far (packing, the all-reduce, unpacking)."""
        self.reductions = 0
        """Calls of :meth:`average_gradients` so far."""
        self.barrier()  # every rank has joined before the first real collective

    def _all_reduce(self, t: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
        opts = dist.AllreduceOptions()
        opts.reduceOp = dist.ReduceOp(op)
        self.group.allreduce([t], opts).wait()
        return t

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace every parameter's ``.grad`` by its mean over the ranks: one all-reduce of one flat buffer.

        A missing gradient counts as zeros (the ranks run the same graph, so they agree on which are missing).
        """
        ps = [p for p in params if p.requires_grad]
        if not ps:
            return
        t0 = time.perf_counter()
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in ps])
        self._all_reduce(flat).div_(self.world_size)
        pos = 0
        for p in ps:
            n = p.numel()
            g = flat[pos:pos + n].view_as(p)
            p.grad = g.clone() if p.grad is None else p.grad.copy_(g)
            pos += n
        self.reduce_seconds += time.perf_counter() - t0
        self.reductions += 1

    def _here(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of ``x`` where this group's backend reduces it (NCCL: this rank's GPU; gloo: the CPU)."""
        where = self.device if self.backend == "nccl" else torch.device("cpu")
        return x.detach().to(where, copy=True)

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` summed over the ranks (a new tensor on ``x``'s device; ``x`` is untouched)."""
        return self._all_reduce(self._here(x)).to(x.device)

    def max(self, x: torch.Tensor) -> torch.Tensor:
        """The elementwise largest ``x`` of the ranks (a new tensor on ``x``'s device)."""
        return self._all_reduce(self._here(x), dist.ReduceOp.MAX).to(x.device)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` averaged over the ranks (of equal shards: the whole batch's mean of a per-shard mean)."""
        return self.sum(x) / self.world_size

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (ranks must agree before any of them enters a collective step)."""
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device if self.backend == "nccl" else "cpu")
        return bool(self._all_reduce(t, dist.ReduceOp.MIN).item())

    def gather(self, x: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Every rank's ``x`` (same shape on each) joined along ``dim`` in rank order: the whole batch."""
        x = x.detach().contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        self.group.allgather([parts], [x]).wait()
        return torch.cat(parts, dim)

    def standardize(self, a: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """``(a - mean) / (std + eps)`` with the mean and (unbiased) std of every rank's ``a`` together."""
        s = torch.stack([a.sum(), (a * a).sum(), torch.tensor(float(a.numel()), device=a.device)]).double()
        total, sq, n = self.sum(s).unbind()
        mean = total / n
        var = (sq - n * mean * mean) / (n - 1).clamp(min=1.0)
        return (a - mean.to(a.dtype)) / (var.clamp(min=0.0).sqrt().to(a.dtype) + eps)

    def broadcast(self, tensors: Sequence[torch.Tensor], src: int = 0) -> None:
        """Overwrite ``tensors`` on every rank with rank ``src``'s (in place), one flat buffer."""
        if not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1).to(tensors[0].dtype) for t in tensors])
        opts = dist.BroadcastOptions()
        opts.rootRank = src
        self.group.broadcast([flat], opts).wait()
        pos = 0
        for t in tensors:
            n = t.numel()
            with torch.no_grad():
                t.copy_(flat[pos:pos + n].view_as(t))
            pos += n

    def barrier(self) -> None:
        """Return once every rank got here."""
        self.all_true(True)

    def close(self) -> None:
        """Leave the group (its sockets close once every rank's handle is gone)."""
        shutdown = getattr(self.group, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except RuntimeError:
                pass
