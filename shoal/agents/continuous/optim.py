"""Flat parameter buffers and an Adam that updates one network in a handful of tensor ops.

Off-policy agents take one small gradient step per env step, so per-step overhead
matters as much as the matmuls. :class:`FlatParams` re-points a network's parameters
(and their ``.grad``) into one contiguous buffer each, so Adam, gradient clipping,
zeroing and Polyak averaging are each a few ops on one tensor, with no Python loop over
parameters and no host-device sync (no ``.item()``; bias corrections are Python floats).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn


class FlatParams:
    """``params`` re-pointed into one buffer ``data``; their grads into ``grad`` (when ``grads``).

    Modules keep working as before: ``state_dict`` and ``load_state_dict`` read and write
    the views. Gradients accumulate into ``grad`` in place, so call :meth:`zero_grad`
    (not ``set_to_none``) between steps. Moving the module (``.to``) afterwards would
    detach the parameters from the buffer: build this on the final device.
    """

    def __init__(self, params: Iterable[nn.Parameter], grads: bool = True) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("FlatParams needs at least one parameter")
        first = self.params[0]
        n = sum(p.numel() for p in self.params)
        self.data = torch.empty(n, dtype=first.dtype, device=first.device)
        self.grad = torch.zeros(n, dtype=first.dtype, device=first.device) if grads else None
        offset = 0
        with torch.no_grad():
            for p in self.params:
                k = p.numel()
                self.data[offset:offset + k].copy_(p.reshape(-1))
                p.data = self.data[offset:offset + k].view_as(p)
                if self.grad is not None:
                    p.grad = self.grad[offset:offset + k].view_as(p)
                offset += k

    def zero_grad(self) -> None:
        assert self.grad is not None
        self.grad.zero_()

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale the gradient to norm at most ``max_norm`` (no sync); returns the norm before."""
        assert self.grad is not None
        norm = torch.linalg.vector_norm(self.grad)
        self.grad.mul_((max_norm / (norm + 1e-6)).clamp(max=1.0))
        return norm


class FlatAdam:
    """Adam (Kingma & Ba 2015; PyTorch's formulation, no weight decay) over a :class:`FlatParams`."""

    def __init__(self, flat: FlatParams, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        if flat.grad is None:
            raise ValueError("FlatAdam needs FlatParams built with grads=True")
        self.flat = flat
        self.lr, self.betas, self.eps = float(lr), betas, float(eps)
        self.m = torch.zeros_like(flat.data)
        self.v = torch.zeros_like(flat.data)
        self._denom = torch.zeros_like(flat.data)
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        assert self.flat.grad is not None
        self.t += 1
        b1, b2 = self.betas
        g = self.flat.grad
        self.m.lerp_(g, 1.0 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
        torch.sqrt(self.v, out=self._denom)
        self._denom.div_(math.sqrt(1.0 - b2 ** self.t)).add_(self.eps)
        self.flat.data.addcdiv_(self.m, self._denom, value=-self.lr / (1.0 - b1 ** self.t))

    def state(self) -> dict[str, Any]:
        return {"m": self.m, "v": self.v, "t": self.t, "lr": self.lr}

    def load_state(self, state: dict[str, Any]) -> None:
        self.m.copy_(state["m"])
        self.v.copy_(state["v"])
        self.t = int(state["t"])
        self.lr = float(state["lr"])



_RETAINED = False


def retain_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks instead of handing them back to the OS (once per process).

    Every gradient step allocates and frees the same activation-sized blocks (~0.5 MB for
    256-wide layers at batch 256). By default glibc serves blocks that large with fresh
    ``mmap`` pages and returns them on free, so each step pays ~1000 page faults (measured:
    2.7 ms of kernel time per SAC step at 256 units). Raising the mmap and trim thresholds
    to 32 MB makes the heap reuse them. A no-op returning False off glibc.
    """
    global _RETAINED
    if _RETAINED:
        return True
    try:
        import ctypes
        import ctypes.util
        import sys

        if not sys.platform.startswith("linux"):
            return False
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        limit = 32 * 1024 * 1024  # glibc's largest allowed mmap threshold on 64-bit
        _RETAINED = bool(libc.mallopt(m_mmap_threshold, limit)) and bool(libc.mallopt(m_trim_threshold, 2 * limit))
    except (OSError, AttributeError):
        _RETAINED = False
    return _RETAINED
