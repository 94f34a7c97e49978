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
                     buf: Buffers = new_buffer, tag: str = "") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``k`` ReLU MLPs on the shared input ``x [B, in]``: the output ``[k, B, out]`` and each layer's input."""
    k, n = ws[0].shape[0], x.shape[0]
    hs = [x.expand(k, *x.shape)]
    for i, (w, b) in enumerate(zip(ws[:-1], bs[:-1])):
        hs.append(torch.baddbmm(b, hs[-1], w, out=buf(f"{tag}h{i}", (k, n, w.shape[-1]), x)).relu_())
    w, b = ws[-1], bs[-1]
    out = buf(f"{tag}out", (k, n, w.shape[-1]), x)
    if w.shape[-1] == 1:
        for j in range(k):
            torch.addmm(b[j], hs[-1][j], w[j], out=out[j])
    else:
        torch.baddbmm(b, hs[-1], w, out=out)
    return out, hs


def ensemble_backward(grad: torch.Tensor, hs: Sequence[torch.Tensor], ws: Sequence[torch.Tensor], gws: Grads,
                      gbs: Grads, input_grad: bool, buf: Buffers = new_buffer, tag: str = "") -> torch.Tensor | None:
    """Back through :func:`ensemble_forward` from ``grad [k, B, out]``.

    Writes each layer's weight and bias gradient into ``gws[i]`` / ``gbs[i]`` (skipped where
    None) and returns the gradient of the shared input ``[B, in]`` when ``input_grad``.
    """
    g = grad.contiguous()
    for i in reversed(range(len(ws))):
        h, w, gw, gb = hs[i], ws[i], gws[i], gbs[i]
        if gw is not None:
            if w.shape[-1] == 1:
                for j in range(w.shape[0]):
                    torch.mm(h[j].t(), g[j], out=gw[j])
            else:
                torch.bmm(h.transpose(1, 2), g, out=gw)
        if gb is not None:
            torch.sum(g, 1, keepdim=True, out=gb)
        if i == 0:
            if not input_grad:
                return None
            gx = torch.mm(g[0], w[0].t())  # summed over members: the input is shared
            for j in range(1, w.shape[0]):
                gx.addmm_(g[j], w[j].t())
            return gx
        gh = buf(f"{tag}g{i}", tuple(h.shape), g)
        torch.mul(g, w.transpose(1, 2), out=gh) if w.shape[-1] == 1 else torch.bmm(g, w.transpose(1, 2), out=gh)
        g = _relu_backward_(gh, h)
    return None


def mlp_forward(x: torch.Tensor, ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor],
                buf: Buffers = new_buffer, tag: str = "") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A ReLU MLP (``nn.Linear`` layout) on ``x [B, in]``: the output ``[B, out]`` and each layer's input."""
    n = x.shape[0]
    hs = [x]
    for i, (w, b) in enumerate(zip(ws[:-1], bs[:-1])):
        hs.append(torch.addmm(b, hs[-1], w.t(), out=buf(f"{tag}h{i}", (n, w.shape[0]), x)).relu_())
    out = torch.addmm(bs[-1], hs[-1], ws[-1].t(), out=buf(f"{tag}out", (n, ws[-1].shape[0]), x))
    return out, hs


def mlp_backward(grad: torch.Tensor, hs: Sequence[torch.Tensor], ws: Sequence[torch.Tensor], gws: Grads,
                 gbs: Grads, input_grad: bool, buf: Buffers = new_buffer, tag: str = "") -> torch.Tensor | None:
    """Back through :func:`mlp_forward` from ``grad [B, out]``; gradients as in :func:`ensemble_backward`."""
    g = grad.contiguous()
    for i in reversed(range(len(ws))):
        if gws[i] is not None:
            torch.mm(g.t(), hs[i], out=gws[i])
        if gbs[i] is not None:
            torch.sum(g, 0, out=gbs[i])
        if i == 0:
            return g.mm(ws[0]) if input_grad else None
        gh = torch.mm(g, ws[i], out=buf(f"{tag}g{i}", tuple(hs[i].shape), g))
        g = _relu_backward_(gh, hs[i])
    return None


class _Fused(torch.autograd.Function):
    """One autograd node for a whole MLP: ``apply(ensemble, x, w0, b0, w1, b1, ...)``."""

    @staticmethod
    def forward(ctx: Any, ensemble: bool, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ws, bs = params[0::2], params[1::2]
        out, hs = (ensemble_forward if ensemble else mlp_forward)(x, ws, bs)
        ctx.ensemble = ensemble
        ctx.save_for_backward(*hs, *ws)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        n = len(saved) // 2
        hs, ws = saved[:n], saved[n:]
        needs = ctx.needs_input_grad
        gws = [torch.empty_like(w) if needs[2 + 2 * i] else None for i, w in enumerate(ws)]
        gbs = [grad.new_empty((w.shape[0], 1, w.shape[-1]) if ctx.ensemble else (w.shape[0],))
               if needs[3 + 2 * i] else None for i, w in enumerate(ws)]
        gx = (ensemble_backward if ctx.ensemble else mlp_backward)(grad, hs, ws, gws, gbs, needs[1])
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
