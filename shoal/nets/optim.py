"""shoal's one Adam (and RMSprop, SGD, AdaGrad), gradient clipping, Polyak averaging and flat parameter buffers.

``torch.optim`` optimisers import ``torch._dynamo`` on their first step (about 3 s on a
CPU build, more than a whole CartPole run) and spend tens of microseconds of Python per
step. These call the same kernels directly: Adam runs torch's fused Adam kernel (one
kernel for every parameter; per-parameter step counts, so a parameter that misses a
gradient keeps its own bias correction) and falls back to ``torch._foreach`` ops where
the fused kernel is not built. They follow ``torch.optim``'s update rules (tested against
``torch.optim.Adam``/``RMSprop``/``SGD``) and accept its parameter groups.

:class:`FlatParams` re-points a network's parameters (and their ``.grad``) into one
contiguous buffer, so that the optimiser, clipping, zeroing and Polyak averaging each
touch one tensor: the fast path of the off-policy learners, which take a small gradient
step per env step.
"""

from __future__ import annotations

from typing import Any, Iterable, cast

import torch
from torch import nn

#: Device types torch builds its fused Adam kernel for.
_FUSED_DEVICES = ("cpu", "cuda", "xpu", "mps")

ParamsT = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


class _Optimizer:
    """Parameter groups with an ``lr``, per-parameter state, zero_grad and state dicts (``torch.optim``-like).

    Every parameter's state (a ``step`` count and the zero tensors named by ``buffers``)
    is made up front. A group whose parameters share one device keeps its step counts in
    one tensor, so the usual step, where every parameter has a gradient, advances them in
    one op; parameters without a gradient are skipped and their counts stay.
    """

    buffers: tuple[str, ...] = ()

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        items: list[Any] = list(params)
        groups: list[dict[str, Any]] = items if items and isinstance(items[0], dict) else [{"params": items}]
        self.param_groups: list[dict[str, Any]] = []
        # State by the parameter's index over all groups (the order torch.optim's state_dict uses).
        self.state: dict[int, dict[str, torch.Tensor]] = {}
        self._steps: list[torch.Tensor | None] = []  # per group: all its step counts, or None (several devices)
        self._lists: list[dict[str, list[torch.Tensor]]] = []  # per group: each state entry's tensors, in order
        i = 0
        for g in groups:
            ps = [p for p in g["params"] if p.requires_grad]
            self.param_groups.append({**defaults, **{k: v for k, v in g.items() if k != "params"}, "params": ps})
            one_device = bool(ps) and all(p.device == ps[0].device for p in ps)
            counts = torch.zeros(len(ps), dtype=torch.float32, device=ps[0].device) if one_device else None
            self._steps.append(counts)
            for j, p in enumerate(ps):
                step = counts[j] if counts is not None else torch.zeros((), dtype=torch.float32, device=p.device)
                self.state[i] = {"step": step, **{b: torch.zeros_like(p, memory_format=torch.preserve_format)
                                                  for b in self.buffers}}
                i += 1
            self._lists.append({k: [self.state[n][k] for n in range(i - len(ps), i)] for k in ("step", *self.buffers)})

    def _update(self, group: dict[str, Any], ps: list[torch.Tensor], grads: list[torch.Tensor],
                state: dict[str, list[torch.Tensor]]) -> None:
        """Apply the rule to parameters of one device and dtype (step counts already advanced)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        i0 = 0
        for group, counts, lists in zip(self.param_groups, self._steps, self._lists):
            ps = group["params"]
            idx = range(i0, i0 + len(ps))
            i0 += len(ps)
            grads = [p.grad for p in ps]
            if counts is not None and all(g is not None for g in grads):
                counts.add_(1.0)  # the common case: every parameter steps
                first = ps[0]
                if all(p.dtype == first.dtype for p in ps):
                    self._update(group, ps, grads, lists)
                    continue
                stepped = list(zip(idx, ps))
            else:
                stepped = [(i, p) for i, p in zip(idx, ps) if p.grad is not None]
                if not stepped:
                    continue
                torch._foreach_add_([self.state[i]["step"] for i, _ in stepped], 1.0)
            by_kind: dict[tuple[torch.device, torch.dtype], list[tuple[int, torch.Tensor]]] = {}
            for i, p in stepped:
                by_kind.setdefault((p.device, p.dtype), []).append((i, p))
            for pairs in by_kind.values():
                self._update(group, [p for _, p in pairs], [cast(torch.Tensor, p.grad) for _, p in pairs],
                             {k: [self.state[i][k] for i, _ in pairs] for k in ("step", *self.buffers)})

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero in place) every parameter's gradient."""
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """Per-parameter state (tensors copied) and the groups' hyperparameters."""
        return {"state": {i: {k: v.clone() for k, v in s.items()} for i, s in self.state.items()},
                "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]}

    @torch.no_grad()
    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` in place (onto this optimiser's devices); missing entries restart at zero."""
        saved = {int(i): s for i, s in sd["state"].items()}
        for i, s in self.state.items():
            for k, t in s.items():
                v = saved.get(i, {}).get(k)
                t.copy_(v) if isinstance(v, torch.Tensor) else t.fill_(float(v) if v is not None else 0.0)
        for g, kept in zip(self.param_groups, sd["param_groups"]):
            g.update({k: tuple(v) if isinstance(v, list) else v for k, v in kept.items() if k in g and k != "params"})


class Adam(_Optimizer):
    """Adam (Kingma & Ba 2015), as ``torch.optim.Adam`` without weight decay or amsgrad.

    Every parameter keeps its own step count: a parameter without a gradient at a step is
    not updated and its bias correction does not advance (as in ``torch.optim.Adam``).
    ``fused=None`` uses torch's fused kernel where it exists (float parameters on CPU, CUDA,
    XPU, MPS) and ``torch._foreach`` ops elsewhere; ``False`` forces the foreach path.
    """

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, fused: bool | None = None) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})
        self.fused = fused

    def _update(self, group: dict[str, Any], ps: list[torch.Tensor], grads: list[torch.Tensor],
                state: dict[str, list[torch.Tensor]]) -> None:
        (b1, b2), lr, eps = group["betas"], float(group["lr"]), float(group["eps"])
        fused = self.fused if self.fused is not None else (ps[0].device.type in _FUSED_DEVICES and ps[0].is_floating_point())
        if fused:
            torch._fused_adam_(ps, grads, state["exp_avg"], state["exp_avg_sq"], [], state["step"], lr=lr, beta1=b1,
                               beta2=b2, weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
        else:
            _foreach_adam(ps, grads, state["exp_avg"], state["exp_avg_sq"], state["step"], lr, b1, b2, eps)


def _foreach_adam(ps: list[torch.Tensor], grads: list[torch.Tensor], m: list[torch.Tensor], v: list[torch.Tensor],
                  steps: list[torch.Tensor], lr: float, b1: float, b2: float, eps: float) -> None:
    """Adam's update as ``torch.optim.Adam``'s foreach path, one set of bias corrections per distinct step count.

    Reading the step counts syncs with the device: this path serves only devices without
    the fused kernel.
    """
    torch._foreach_lerp_(m, grads, 1.0 - b1)
    torch._foreach_mul_(v, b2)
    torch._foreach_addcmul_(v, grads, grads, 1.0 - b2)
    by_step: dict[float, list[int]] = {}
    for j, t in enumerate(torch.stack(steps).tolist()):
        by_step.setdefault(t, []).append(j)
    for t, js in by_step.items():
        bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
        denom = torch._foreach_sqrt([v[j] for j in js])
        torch._foreach_div_(denom, bc2**0.5)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_([ps[j] for j in js], [m[j] for j in js], denom, -lr / bc1)


class RMSprop(_Optimizer):
    """RMSprop, as ``torch.optim.RMSprop`` (no momentum, not centred)."""

    buffers = ("square_avg",)

    def __init__(self, params: ParamsT, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps})

    def _update(self, group: dict[str, Any], ps: list[torch.Tensor], grads: list[torch.Tensor],
                state: dict[str, list[torch.Tensor]]) -> None:
        sq = state["square_avg"]
        torch._foreach_mul_(sq, group["alpha"])
        torch._foreach_addcmul_(sq, grads, grads, 1.0 - group["alpha"])
        avg = torch._foreach_sqrt(sq)
        torch._foreach_add_(avg, group["eps"])
        torch._foreach_addcdiv_(ps, grads, avg, -float(group["lr"]))


class SGD(_Optimizer):
    """Plain stochastic gradient descent ``p -= lr * grad``, as ``torch.optim.SGD`` without momentum."""

    def __init__(self, params: ParamsT, lr: float = 1e-3) -> None:
        super().__init__(params, {"lr": lr})

    def _update(self, group: dict[str, Any], ps: list[torch.Tensor], grads: list[torch.Tensor],
                state: dict[str, list[torch.Tensor]]) -> None:
        torch._foreach_add_(ps, grads, alpha=-float(group["lr"]))


class Adagrad(_Optimizer):
    """AdaGrad (Duchi et al. 2011), as ``torch.optim.Adagrad`` without lr decay or weight decay.

    ``sum += grad**2; param -= lr * grad / (sqrt(sum) + eps)``, the accumulator starting at
    ``initial_accumulator_value``: GORILA's parameter-server optimiser.
    """

    buffers = ("sum",)

    def __init__(self, params: ParamsT, lr: float = 1e-2, eps: float = 1e-10,
                 initial_accumulator_value: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "eps": eps})
        if initial_accumulator_value:
            for s in self.state.values():
                s["sum"].fill_(initial_accumulator_value)

    def _update(self, group: dict[str, Any], ps: list[torch.Tensor], grads: list[torch.Tensor],
                state: dict[str, list[torch.Tensor]]) -> None:
        acc = state["sum"]
        torch._foreach_addcmul_(acc, grads, grads, 1.0)
        std = torch._foreach_sqrt(acc)
        torch._foreach_add_(std, float(group["eps"]))
        torch._foreach_addcdiv_(ps, grads, std, -float(group["lr"]))


Optimizer = Adam | RMSprop | SGD | Adagrad


def make_optimizer(name: str, params: ParamsT, lr: float, eps: float = 1e-8) -> Optimizer:
    """Adam, RMSprop (alpha 0.99), SGD or AdaGrad by name; ``params`` may be parameter groups with their own ``lr``."""
    if name == "adam":
        return Adam(params, lr=lr, eps=eps)
    if name == "rmsprop":
        return RMSprop(params, lr=lr, alpha=0.99, eps=eps)
    if name == "sgd":
        return SGD(params, lr=lr)
    if name == "adagrad":
        return Adagrad(params, lr=lr, eps=eps)
    raise ValueError(f"unknown optimizer {name!r}; use adam, rmsprop, sgd or adagrad")


def optimizer_state(opt: Optimizer) -> dict[str, Any]:
    """The optimiser's state in a checkpointable form (tensors + JSON values)."""
    sd = opt.state_dict()
    return {"state": {int(k): dict(v) for k, v in sd["state"].items()},
            "param_groups": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]}


def load_optimizer_state(opt: Optimizer, state: dict[str, Any]) -> None:
    """Restore what :func:`optimizer_state` produced."""
    opt.load_state_dict(state)


@torch.no_grad()
def grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The global L2 norm of ``grads`` as a 0-d tensor (no host sync; 0 for an empty list)."""
    if not grads:
        return torch.zeros(())
    if len(grads) == 1:
        return torch.linalg.vector_norm(grads[0])
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


@torch.no_grad()
def clip_grad_norm_(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients of ``params`` in place to a global L2 norm of at most ``max_norm``.

    Returns the norm before clipping as a 0-d tensor (no host sync), like
    ``torch.nn.utils.clip_grad_norm_``.
    """
    grads = [p.grad for p in params if p.grad is not None]
    norm = grad_norm(grads)
    if grads:
        torch._foreach_mul_(grads, (max_norm / (norm + 1e-6)).clamp(max=1.0))
    return norm


@torch.no_grad()
def polyak_update_(target: torch.Tensor | Iterable[torch.Tensor], online: torch.Tensor | Iterable[torch.Tensor],
                   tau: float) -> None:
    """In place ``target <- tau * online + (1 - tau) * target``; ``tau >= 1`` copies (a hard update).

    Takes one tensor each (e.g. :attr:`FlatParams.data`) or matching lists of tensors.
    """
    if isinstance(target, torch.Tensor):
        assert isinstance(online, torch.Tensor)
        target.copy_(online) if tau >= 1.0 else target.lerp_(online, tau)
        return
    ts, os_ = list(target), list(cast(Iterable[torch.Tensor], online))
    if tau >= 1.0:
        torch._foreach_copy_(ts, os_)
    else:
        torch._foreach_lerp_(ts, os_, tau)


class FlatParams:
    """``params`` re-pointed into one buffer ``data``; their grads into ``grad`` (when ``grads``).

    Modules keep working as before: ``state_dict`` and ``load_state_dict`` read and write
    the views. :meth:`parameters` is the buffer as one parameter, for an optimiser or
    :func:`clip_grad_norm_` to update in one op. Gradients accumulate into ``grad`` in
    place, so call :meth:`zero_grad` (not ``set_to_none``) between steps. Moving the
    module (``.to``) afterwards would detach the parameters from the buffer: build this on
    the final device.
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
        # The whole buffer as one parameter (same storage), its gradient the flat gradient.
        self.param = nn.Parameter(self.data, requires_grad=grads)
        if self.grad is not None:
            self.param.grad = self.grad

    def parameters(self) -> list[nn.Parameter]:
        """The buffer as a single parameter (with the flat gradient), for an optimiser."""
        return [self.param]

    def zero_grad(self) -> None:
        """Zero the flat gradient in place."""
        assert self.grad is not None
        self.grad.zero_()
