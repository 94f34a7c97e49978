"""Optimisers, built fast for small nets, and their checkpointable state."""

from __future__ import annotations

from typing import Any, Iterable

import torch


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, eps: float) -> torch.optim.Optimizer:
    """Adam or RMSprop, using the fused/foreach kernels where this torch has them."""
    params = list(params)
    if name == "adam":
        try:
            return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
        except (RuntimeError, TypeError):
            return torch.optim.Adam(params, lr=lr, eps=eps, foreach=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=eps, foreach=True)
    raise ValueError(f"unknown optimizer {name!r}; use adam or rmsprop")


def optimizer_state(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimiser's state dict in a checkpointable form (tensors + JSON values)."""
    sd = opt.state_dict()
    return {"state": {int(k): dict(v) for k, v in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Restore what :func:`optimizer_state` produced."""
    groups = []
    for g in state["param_groups"]:
        g = dict(g)
        g["params"] = [int(p) for p in g["params"]]
        for k, v in list(g.items()):
            if isinstance(v, list) and k != "params":
                g[k] = tuple(v)
        groups.append(g)
    opt.load_state_dict({"state": {int(k): v for k, v in state["state"].items()}, "param_groups": groups})
