"""Lean multi-tensor Adam and RMSprop, and their checkpointable state.

``torch.optim`` optimisers import ``torch._dynamo`` on their first step (about 3 s
on a CPU build), more than a whole CartPole run. These use the same ``torch._foreach``
kernels as ``torch.optim``'s foreach path and follow its update rules exactly
(tested against ``torch.optim.Adam``/``RMSprop``), without that import.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch


class _Foreach:
    """Shared plumbing: parameter groups with an ``lr``, zero_grad, state dicts."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, **hyper: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": lr, **hyper}]
        self.state: dict[int, dict[str, torch.Tensor]] = {}
        self.steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def _with_grads(self, *buffers: str) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """Indices, data, grads and state of the parameters that have gradients; state holds a
        ``step`` counter and a zero ``buffers`` tensor per parameter, created on first use."""
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        for i in idx:
            if i not in self.state:
                p = self.params[i]
                self.state[i] = {"step": torch.zeros((), dtype=torch.float32), **{b: torch.zeros_like(p) for b in buffers}}
        return idx, [self.params[i].data for i in idx], [self.params[i].grad for i in idx], [self.state[i] for i in idx]

    def state_dict(self) -> dict[str, Any]:
        return {"state": {i: {k: v.clone() for k, v in s.items()} for i, s in self.state.items()},
                "param_groups": [dict(g) for g in self.param_groups], "steps": self.steps}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.state = {int(i): {k: v.clone() for k, v in s.items()} for i, s in sd["state"].items()}
        self.param_groups[0].update({k: v for k, v in sd["param_groups"][0].items() if k != "params"})
        self.steps = int(sd.get("steps", 0))


class Adam(_Foreach):
    """Adam (Kingma & Ba), as ``torch.optim.Adam`` with ``foreach=True``."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        super().__init__(params, lr, beta1=betas[0], beta2=betas[1], eps=eps)

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        idx, ps, grads, st = self._with_grads("exp_avg", "exp_avg_sq")
        if not idx:
            return
        steps = [s["step"] for s in st]
        m = [s["exp_avg"] for s in st]
        v = [s["exp_avg_sq"] for s in st]
        torch._foreach_add_(steps, 1.0)
        b1, b2, lr, eps = g["beta1"], g["beta2"], g["lr"], g["eps"]
        torch._foreach_lerp_(m, grads, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, 1 - b2)
        t = float(steps[0])  # every parameter steps together
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, bc2**0.5)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(ps, m, denom, -lr / bc1)
        self.steps += 1


class RMSprop(_Foreach):
    """RMSprop, as ``torch.optim.RMSprop`` (no momentum, not centred) with ``foreach=True``."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8) -> None:
        super().__init__(params, lr, alpha=alpha, eps=eps)

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        idx, ps, grads, st = self._with_grads("square_avg")
        if not idx:
            return
        torch._foreach_add_([s["step"] for s in st], 1.0)
        sq = [s["square_avg"] for s in st]
        torch._foreach_mul_(sq, g["alpha"])
        torch._foreach_addcmul_(sq, grads, grads, 1 - g["alpha"])
        avg = torch._foreach_sqrt(sq)
        torch._foreach_add_(avg, g["eps"])
        torch._foreach_addcdiv_(ps, grads, avg, -g["lr"])
        self.steps += 1


Optimizer = Adam | RMSprop


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, eps: float) -> Optimizer:
    """Adam or RMSprop (alpha 0.99) by name."""
    if name == "adam":
        return Adam(params, lr=lr, eps=eps)
    if name == "rmsprop":
        return RMSprop(params, lr=lr, alpha=0.99, eps=eps)
    raise ValueError(f"unknown optimizer {name!r}; use adam or rmsprop")


def optimizer_state(opt: Any) -> dict[str, Any]:
    """The optimiser's state in a checkpointable form (tensors + JSON values)."""
    sd = opt.state_dict()
    return {"state": {int(k): dict(v) for k, v in sd["state"].items()},
            "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]],
            **({"steps": sd["steps"]} if "steps" in sd else {})}


def load_optimizer_state(opt: Any, state: dict[str, Any]) -> None:
    """Restore what :func:`optimizer_state` produced."""
    if isinstance(opt, _Foreach):
        opt.load_state_dict(state)
        return
    groups = []
    for g, cur in zip(state["param_groups"], opt.state_dict()["param_groups"]):
        g = {k: tuple(v) if isinstance(v, list) else v for k, v in g.items()}
        g["params"] = cur["params"]
        groups.append(g)
    opt.load_state_dict({"state": {int(k): v for k, v in state["state"].items()}, "param_groups": groups})
