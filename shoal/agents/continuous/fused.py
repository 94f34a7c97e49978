"""ReLU MLPs with hand-written backward passes: the critics' ensemble and the policy's stack.

Autograd records some ten nodes per MLP call and allocates every intermediate afresh; at
the sizes of the continuous agents (256-unit layers, batch 256, one gradient step per env
step) that bookkeeping, the page faults of the fresh ~0.5 MB blocks and batched kernels on
the one-unit Q layer cost milliseconds per step on a CPU. The passes here compute the same
values and gradients with only the products a call needs:

- weight gradients only where asked for (the policy loss reads the critics through
  detached weights, so its critic pass computes input gradients alone);
- no gradient for an input that needs none (the replayed observations and actions),
  which skips the first layer's input product;
- a one-unit output layer (the Q value) as per-member matrix-vector products, which
  batched kernels run several times slower than plain ones.

- on the CPU in float32 (see :data:`ONEDNN`), the
  large products (``m * k * n >= 128**3``) run in oneDNN's matmul (:func:`matmul_nt`)
  rather than MKL's ``sgemm``: the same products, about twice as fast at these shapes on
  a CPU where MKL takes its AVX2 code path (measured on an AMD EPYC with AVX-512).
  They hand back fresh tensors, which the passes keep (an ensemble layer's input is
  then a list of its members' tensors) rather than copy into the workspace.

Each pass takes a ``buf(key, shape, like)`` that hands out its large intermediate tensors
(:class:`Workspace` keeps them from step to step, so a learner's steps allocate no large
blocks) and writes gradients into the tensors it is given (e.g. views of a flat gradient
buffer). :func:`ensemble_relu_mlp` and :func:`relu_mlp` wrap them as single autograd
nodes for code that uses autograd. Layouts: ensemble weights ``[k, in, out]`` and biases
``[k, 1, out]``; stack weights ``[out, in]`` and biases ``[out]`` (``nn.Linear``'s).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

#: ``buf(key, shape, like)``: a tensor of ``shape`` with ``like``'s dtype and device, contents undefined.
Buffers = Callable[[str, tuple[int, ...], torch.Tensor], torch.Tensor]
Grads = Sequence[torch.Tensor | None]
#: An ensemble layer's input: one ``[k, B, n]`` tensor, or its ``k`` members' ``[B, n]`` tensors.
Acts = torch.Tensor | list[torch.Tensor]

try:  # oneDNN's fp32 linear (what torch's inductor calls on the CPU); absent from builds without it
    _LINEAR: Any = torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
except (AttributeError, RuntimeError):
    _LINEAR = None
#: Products at least this large (``m * k * n``) go to oneDNN; below it MKL's small-matrix paths are faster.
ONEDNN_MIN_MACS = 128**3
#: Whether large products go to oneDNN. The same in every process, so a run gives the same numbers from
#: ``shoal train``, ``shoal.train`` and a Ray node. oneDNN returns a fresh block for every product, which
#: costs page faults where glibc hands freed blocks back (:func:`shoal.core.memory.retain_freed_memory`
#: keeps them in shoal's own processes); measured on SAC at 256 units, one thread, without retaining:
#: 5.7 ms an update against MKL's 8.6 ms.
ONEDNN = True


def use_onednn(x: torch.Tensor, m: int, k: int, n: int) -> bool:
    """Whether an ``[m, k] @ [k, n]`` product on ``x``'s device and dtype runs in oneDNN (outside autograd only)."""
    return (_LINEAR is not None and m * k * n >= ONEDNN_MIN_MACS and x.device.type == "cpu"
            and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and ONEDNN)


def matmul_nt(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
    """``x @ w.T (+ b)`` (then ReLU) in oneDNN: ``x [m, k]``, ``w [n, k]`` (any strides); a fresh ``[m, n]`` tensor."""
    assert _LINEAR is not None
    return _LINEAR(x, w, b, "relu" if relu else "none", [], "")


def new_buffer(key: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A fresh tensor every call (the :data:`Buffers` of one-off passes)."""
    return like.new_empty(shape)


class Workspace:
    """Named tensors kept across calls: ``ws(key, shape, like)`` returns the same storage while the shape holds.

    A tensor handed out under a key is overwritten by the next pass that asks for that key,
    so a caller must be done with it (or have copied what it keeps) by then.
    """

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def __call__(self, key: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        t = self._tensors.get(key)
        if t is None or t.shape != shape or t.dtype != like.dtype or t.device != like.device:
            t = self._tensors[key] = like.new_empty(shape)
        return t


def _relu_backward_(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``grad`` zeroed in place where the ReLU's output ``out`` is 0 (what ``ReluBackward`` computes)."""
    return torch.ops.aten.threshold_backward.grad_input(grad, out, 0.0, grad_input=grad)


def ensemble_forward(x: torch.Tensor, ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor],
                     buf: Buffers = new_buffer, tag: str = "") -> tuple[torch.Tensor, list[Acts]]:
    """``k`` ReLU MLPs on the shared input ``x [B, in]``: the output ``[k, B, out]`` and each layer's input."""
    k, n = ws[0].shape[0], x.shape[0]
    hs: list[Acts] = [x.expand(k, *x.shape)]
    for i, (w, b) in enumerate(zip(ws[:-1], bs[:-1])):
        h = hs[-1]
        if use_onednn(x, n, w.shape[1], w.shape[2]):  # per member, into fresh tensors
            hs.append([matmul_nt(h[j], w[j].t(), b[j, 0], relu=True) for j in range(k)])
        else:
            hs.append(torch.baddbmm(b, _stacked(h), w, out=buf(f"{tag}h{i}", (k, n, w.shape[-1]), x)).relu_())
    w, b = ws[-1], bs[-1]
    h = hs[-1]
    out = buf(f"{tag}out", (k, n, w.shape[-1]), x)
    if w.shape[-1] == 1 or isinstance(h, list):
        for j in range(k):
            if use_onednn(x, n, w.shape[1], w.shape[2]):
                out[j].copy_(matmul_nt(h[j], w[j].t(), b[j, 0]))
            else:
                torch.addmm(b[j], h[j], w[j], out=out[j])
    else:
        torch.baddbmm(b, h, w, out=out)
    return out, hs


def _stacked(h: Acts) -> torch.Tensor:
    """``h`` as one ``[k, B, n]`` tensor (a copy where it is a list of members)."""
    return torch.stack(h) if isinstance(h, list) else h


def ensemble_backward(grad: torch.Tensor, hs: Sequence[Acts], ws: Sequence[torch.Tensor], gws: Grads,
                      gbs: Grads, input_grad: bool, buf: Buffers = new_buffer, tag: str = "") -> torch.Tensor | None:
    """Back through :func:`ensemble_forward` from ``grad [k, B, out]``.

    Writes each layer's weight and bias gradient into ``gws[i]`` / ``gbs[i]`` (skipped where
    None) and returns the gradient of the shared input ``[B, in]`` when ``input_grad``.
    """
    g: Acts = grad.contiguous()
    k, n = ws[0].shape[0], grad.shape[1]
    for i in reversed(range(len(ws))):
        h, w, gw, gb = hs[i], ws[i], gws[i], gbs[i]
        d_in, d_out = w.shape[1], w.shape[2]
        if gw is not None:
            if use_onednn(grad, d_in, n, d_out):
                for j in range(k):
                    gw[j].copy_(matmul_nt(h[j].t(), g[j].t()))
            elif d_out == 1 or isinstance(h, list) or isinstance(g, list):
                for j in range(k):
                    torch.mm(h[j].t(), g[j], out=gw[j])
            else:
                torch.bmm(h.transpose(1, 2), g, out=gw)
        if gb is not None:
            if isinstance(g, list):
                for j in range(k):
                    torch.sum(g[j], 0, keepdim=True, out=gb[j])
            else:
                torch.sum(g, 1, keepdim=True, out=gb)
        if i == 0:
            if not input_grad:
                return None
            gx = torch.mm(g[0], w[0].t())  # summed over members: the input is shared
            for j in range(1, k):
                gx.addmm_(g[j], w[j].t())
            return gx
        if use_onednn(grad, n, d_out, d_in):  # per member, into fresh tensors
            g = [_relu_backward_(matmul_nt(g[j], w[j]), h[j]) for j in range(k)]
        elif isinstance(h, list):  # this layer's input came from oneDNN: stay per member
            g = [_relu_backward_(g[j] * w[j].t() if d_out == 1 else g[j].mm(w[j].t()), h[j]) for j in range(k)]
        else:
            gh = buf(f"{tag}g{i}", (k, n, d_in), grad)
            g = _stacked(g)
            torch.mul(g, w.transpose(1, 2), out=gh) if d_out == 1 else torch.bmm(g, w.transpose(1, 2), out=gh)
            g = _relu_backward_(gh, h)
    return None


def mlp_forward(x: torch.Tensor, ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor],
                buf: Buffers = new_buffer, tag: str = "") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A ReLU MLP (``nn.Linear`` layout) on ``x [B, in]``: the output ``[B, out]`` and each layer's input."""
    n = x.shape[0]
    hs = [x]
    for i, (w, b) in enumerate(zip(ws[:-1], bs[:-1])):
        if use_onednn(x, n, w.shape[1], w.shape[0]):
            hs.append(matmul_nt(hs[-1], w, b, relu=True))
        else:
            hs.append(torch.addmm(b, hs[-1], w.t(), out=buf(f"{tag}h{i}", (n, w.shape[0]), x)).relu_())
    w, b = ws[-1], bs[-1]
    if use_onednn(x, n, w.shape[1], w.shape[0]):
        return matmul_nt(hs[-1], w, b), hs
    return torch.addmm(b, hs[-1], w.t(), out=buf(f"{tag}out", (n, w.shape[0]), x)), hs


def mlp_backward(grad: torch.Tensor, hs: Sequence[torch.Tensor], ws: Sequence[torch.Tensor], gws: Grads,
                 gbs: Grads, input_grad: bool, buf: Buffers = new_buffer, tag: str = "") -> torch.Tensor | None:
    """Back through :func:`mlp_forward` from ``grad [B, out]``; gradients as in :func:`ensemble_backward`."""
    g = grad.contiguous()
    n = g.shape[0]
    for i in reversed(range(len(ws))):
        gw, d_out, d_in = gws[i], ws[i].shape[0], ws[i].shape[1]
        if gw is not None:
            if use_onednn(g, d_out, n, d_in):
                gw.copy_(matmul_nt(g.t(), hs[i].t()))
            else:
                torch.mm(g.t(), hs[i], out=gw)
        if gbs[i] is not None:
            torch.sum(g, 0, out=gbs[i])
        if i == 0:
            if not input_grad:
                return None
            return matmul_nt(g, ws[0].t()) if use_onednn(g, n, d_out, d_in) else g.mm(ws[0])
        if use_onednn(g, n, d_out, d_in):
            gh = matmul_nt(g, ws[i].t())
        else:
            gh = torch.mm(g, ws[i], out=buf(f"{tag}g{i}", tuple(hs[i].shape), g))
        g = _relu_backward_(gh, hs[i])
    return None


class _Fused(torch.autograd.Function):
    """One autograd node for a whole MLP: ``apply(ensemble, x, w0, b0, w1, b1, ...)``."""

    @staticmethod
    def forward(ctx: Any, ensemble: bool, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ws, bs = params[0::2], params[1::2]
        hs: Sequence[Acts]
        out, hs = (ensemble_forward if ensemble else mlp_forward)(x, ws, bs)
        ctx.ensemble = ensemble
        # Saved flat; ctx.members[i] is the length of layer i's list of member inputs (0: one tensor).
        ctx.members = [len(h) if isinstance(h, list) else 0 for h in hs]
        ctx.save_for_backward(*ws, *[t for h in hs for t in (h if isinstance(h, list) else [h])])
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = list(ctx.saved_tensors)
        ws, rest = saved[:len(ctx.members)], saved[len(ctx.members):]
        hs: list[Acts] = []
        for m in ctx.members:
            hs.append(rest[:m] if m else rest[0])
            rest = rest[max(m, 1):]
        needs = ctx.needs_input_grad
        gws = [torch.empty_like(w) if needs[2 + 2 * i] else None for i, w in enumerate(ws)]
        gbs = [grad.new_empty((w.shape[0], 1, w.shape[-1]) if ctx.ensemble else (w.shape[0],))
               if needs[3 + 2 * i] else None for i, w in enumerate(ws)]
        if ctx.ensemble:
            gx = ensemble_backward(grad, hs, ws, gws, gbs, needs[1])
        else:  # a stack's layer inputs are single tensors
            gx = mlp_backward(grad, [h for h in hs if isinstance(h, torch.Tensor)], ws, gws, gbs, needs[1])
        out: list[torch.Tensor | None] = [None, gx]
        for gw, gb in zip(gws, gbs):
            out += [gw, gb]
        return tuple(out)


def ensemble_relu_mlp(x: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[k, B, out]``: ``k`` ReLU MLPs (``params`` = w0, b0, w1, b1, ...) on ``x [B, in]``, as one autograd node."""
    return _Fused.apply(True, x, *params)


def relu_mlp(x: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[B, out]``: a ReLU MLP (``params`` = w0, b0, w1, b1, ...; ``nn.Linear`` layout) on ``x``, as one autograd node."""
    return _Fused.apply(False, x, *params)
