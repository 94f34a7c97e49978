"""One flat buffer per network: parameter snapshots and gradients as single values.

A :class:`FlatLayout` records, for each named tensor of a state dict, its dtype, shape
and byte offset in one contiguous ``uint8`` buffer (offsets aligned to 8 bytes so every
view is aligned). Packing copies the tensors once; unpacking gives read-only numpy views
or tensors that share the buffer, so a snapshot crosses a process boundary (Ray's object
store, a pipe) as one array and is read without another copy.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

_ALIGN = 8
# catch_warnings swaps process-wide filters: nodes on threads must not interleave it.
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class FlatLayout:
    """Where each tensor of a state dict lives in a flat byte buffer."""

    names: tuple[str, ...]
    dtypes: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    nbytes: int

    @classmethod
    def of(cls, tensors: dict[str, torch.Tensor]) -> "FlatLayout":
        """The layout of ``tensors`` (in their iteration order)."""
        names, dtypes, shapes, offsets = [], [], [], []
        pos = 0
        for name, t in tensors.items():
            try:
                arr_dtype = np.dtype(str(t.dtype).removeprefix("torch."))
            except TypeError:
                raise ValueError(f"tensor {name!r} has dtype {t.dtype}, which numpy has no type for; "
                                 "snapshot it as float32") from None
            pos = -(-pos // _ALIGN) * _ALIGN
            names.append(name)
            dtypes.append(arr_dtype.str)
            shapes.append(tuple(int(s) for s in t.shape))
            offsets.append(pos)
            pos += int(t.numel()) * arr_dtype.itemsize
        return cls(tuple(names), tuple(dtypes), tuple(shapes), tuple(offsets), pos)

    def pack(self, tensors: dict[str, torch.Tensor], out: np.ndarray | None = None) -> np.ndarray:
        """Copy ``tensors`` into one buffer (a fresh one, or ``out``); the result is read-only."""
        buf = np.empty(self.nbytes, np.uint8) if out is None else out
        if buf.nbytes != self.nbytes:
            raise ValueError(f"buffer holds {buf.nbytes} bytes, the layout needs {self.nbytes}")
        for view, name in zip(self._views(buf, writeable=True), self.names):
            src = tensors[name].detach()
            if src.device.type != "cpu":
                src = src.to("cpu")
            view[...] = src.numpy().reshape(view.shape)
        buf.flags.writeable = False
        return buf

    def unpack(self, buf: np.ndarray) -> dict[str, np.ndarray]:
        """Read-only numpy views of every tensor in ``buf`` (no copy)."""
        return dict(zip(self.names, self._views(buf, writeable=False)))

    def unpack_tensors(self, buf: np.ndarray) -> dict[str, torch.Tensor]:
        """CPU tensors sharing ``buf`` (no copy); callers must not write to them."""
        with _WARNINGS_LOCK, warnings.catch_warnings():  # torch warns about read-only arrays; they are never written
            warnings.simplefilter("ignore", UserWarning)
            return {k: torch.from_numpy(v) for k, v in self.unpack(buf).items()}

    def _views(self, buf: np.ndarray, writeable: bool) -> Iterable[np.ndarray]:
        if buf.dtype != np.uint8 or buf.ndim != 1 or buf.nbytes != self.nbytes:
            raise ValueError(f"expected a flat uint8 buffer of {self.nbytes} bytes, got {buf.dtype} {buf.shape}")
        for dtype, shape, off in zip(self.dtypes, self.shapes, self.offsets):
            dt = np.dtype(dtype)
            view = buf[off:off + dt.itemsize * int(np.prod(shape, dtype=np.int64))].view(dt).reshape(shape)
            if not writeable:
                view.flags.writeable = False
            yield view


def flat_grad(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """Every parameter's gradient in one flat float32 vector (zeros where a gradient is missing)."""
    ps = list(params)
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in ps])


def set_flat_grad(params: Iterable[torch.nn.Parameter], flat: torch.Tensor) -> None:
    """Write a flat gradient vector (as :func:`flat_grad` makes it) into the parameters' ``.grad``."""
    ps = list(params)
    total = sum(p.numel() for p in ps)
    if flat.numel() != total:
        raise ValueError(f"flat gradient has {flat.numel()} values, the parameters {total}")
    pos = 0
    for p in ps:
        n = p.numel()
        g = flat[pos:pos + n].view_as(p).to(device=p.device, dtype=p.dtype)
        p.grad = g.clone() if p.grad is None else p.grad.copy_(g)
        pos += n
