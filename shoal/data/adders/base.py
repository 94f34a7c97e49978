"""What every adder shares: where its items go (a table, or a buffer to drain) and checks."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from shoal.core.interfaces import Adder, Table
from shoal.core.types import StepResult
from shoal.errors import ShoalError

#: Computes one priority per item from a batch of items.
PriorityFn = Callable[[dict[str, np.ndarray]], np.ndarray]


def split_priorities(items: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Take a one-per-item ``priority`` field out of ``items`` (``None`` if there is none)."""
    p = items.get("priority")
    if p is None or np.ndim(p) != 1:
        return items, None
    return {k: v for k, v in items.items() if k != "priority"}, p


def concat_items(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join batches of items along the item axis."""
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


class BaseAdder(Adder):
    """Sends items to ``table`` when given one, else buffers them for :meth:`drain`.

    Items going to a table lose their ``priority`` field (one value per item, e.g.
    computed by the actor), which becomes the insert's priorities; ``priority_fn``
    computes priorities from the items instead. Drained items keep the field; route
    them with :func:`split_priorities`.
    """

    def __init__(self, table: Table | None = None, priority_fn: PriorityFn | None = None) -> None:
        self.table = table
        self.priority_fn = priority_fn
        self._pending: list[dict[str, np.ndarray]] = []
        self._obs: np.ndarray | None = None
        self._extras_keys: frozenset[str] | None = None

    @property
    def num_envs(self) -> int:
        if self._obs is None:
            raise ShoalError("the adder has no episode started; call add_first(obs) before add()")
        return len(self._obs)

    def _check_step(self, action: np.ndarray, step: StepResult, extras: dict[str, Any] | None) -> dict[str, np.ndarray]:
        """Validate one batched step; returns the extras as arrays."""
        b = self.num_envs
        for name, value in (("action", action), ("reward", step.reward), ("terminated", step.terminated),
                            ("truncated", step.truncated), ("next_obs", step.next_obs), ("final_obs", step.final_obs)):
            if np.ndim(value) == 0 or len(value) != b:
                raise ShoalError(f"{name} has shape {np.shape(value)} but the adder steps {b} env copies; "
                                 "pass arrays with a leading axis of one entry per copy")
        extras = {k: np.asarray(v) for k, v in (extras or {}).items()}
        keys = frozenset(extras)
        if self._extras_keys is None:
            self._extras_keys = keys
        elif keys != self._extras_keys:
            raise ShoalError(f"extras keys {sorted(keys)} differ from earlier steps' {sorted(self._extras_keys)}; "
                             "pass the same extras on every add")
        for k, v in extras.items():
            if np.ndim(v) == 0 or len(v) != b:
                raise ShoalError(f"extras[{k!r}] has shape {np.shape(v)}; pass one entry per env copy ({b})")
        return extras

    def _emit(self, items: dict[str, np.ndarray]) -> None:
        if len(next(iter(items.values()))) == 0:
            return
        if self.table is None:
            self._pending.append(items)
            return
        priorities: np.ndarray | None
        if self.priority_fn is not None:
            priorities = np.asarray(self.priority_fn(items))
        else:
            items, priorities = split_priorities(items)
        self.table.insert(items, priorities)

    def reset(self) -> None:
        """Forget partial episodes (items already produced stay drainable)."""
        self._obs = None

    def drain(self) -> dict[str, np.ndarray] | None:
        """Items produced since the last drain, as one dict with a leading item axis (None if none)."""
        if not self._pending:
            return None
        out = concat_items(self._pending)
        self._pending = []
        return out


def done_mask(done: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``done`` [B] reshaped to broadcast against ``like`` [B, ...]."""
    return np.asarray(done, dtype=bool).reshape((-1,) + (1,) * (np.ndim(like) - 1))
