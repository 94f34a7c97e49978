"""One guard for every learner: an update whose inputs, loss or gradients hold a NaN or inf is
skipped (counted) or stops the run (``on_nonfinite``), before the optimiser can move a parameter.

A learner calls :meth:`NonFiniteGuard.check` after ``backward`` (and after averaging
gradients in a learner group) and before clipping and ``optimizer.step()``; when it returns
False the learner leaves its parameters, optimiser state, target networks, normalisers and
priorities as they were. The check is one host sync per update: a finite-test of the losses,
of every gradient's norm and of the batch's float fields, taken together. Only a failed check
looks further, to name the source: a non-finite field of the batch (reward, observation), the
loss, or the gradient of which parameter group.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from shoal.errors import ShoalError

_log = logging.getLogger("shoal")

NONFINITE_POLICIES = ("skip", "stop")

#: The metric every guarded learner reports: updates skipped so far (a count, not a rate).
SKIPPED_METRIC = "nonfinite_updates"


class NonFiniteError(ShoalError):
    """An update met a NaN or inf with ``on_nonfinite=stop``."""


def _finite_tensor(t: Any) -> bool:
    if isinstance(t, torch.Tensor):
        return not t.is_floating_point() or bool(torch.isfinite(t).all())
    a = np.asarray(t)
    return a.dtype.kind not in "fc" or bool(np.isfinite(a).all())


#: Tensors up to this many elements are joined into one test (a copy of a few KiB); larger ones are tested alone.
_JOIN_MAX = 1 << 16


def _all_finite(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Whether every element of ``tensors`` (float, any shapes and devices) is finite: a 0-d bool tensor on the
    first one's device. The small tensors of each device (losses, gradient norms, a state batch) are joined, in
    their widest dtype so that nothing finite overflows, and tested at once; a large one (a batch of float
    images) is tested alone rather than copied."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    verdicts: list[torch.Tensor] = []
    for t in tensors:
        if t.numel() > _JOIN_MAX:
            verdicts.append(torch.isfinite(t).all())
        else:
            by_device.setdefault(t.device, []).append(t.reshape(-1))
    for flat in by_device.values():
        dtype = functools.reduce(torch.promote_types, (x.dtype for x in flat))
        verdicts.append(torch.isfinite(torch.cat([x.to(dtype) for x in flat])).all())
    if not verdicts:
        return torch.ones((), dtype=torch.bool)
    first = verdicts[0].device
    return verdicts[0] if len(verdicts) == 1 else torch.stack([v.to(first) for v in verdicts]).all()


def _numpy_fields_finite(batch: Mapping[str, Any]) -> bool:
    """Whether the float numpy arrays among ``batch``'s fields are finite (its tensors are tested with the losses)."""
    return all(bool(np.isfinite(v).all()) for v in batch.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f")


_BATCH_NAMES = {"reward": "reward", "rewards": "reward", "r": "reward", "obs": "observation",
                "observations": "observation", "next_obs": "next observation", "planes": "observation",
                "z": "value target", "pi": "policy target",
                "returns": "return (discounted rewards)"}


def _batch_source(batch: Mapping[str, Any]) -> str | None:
    """The first non-finite field of ``batch`` in user terms (``reward``, ``observation``), or None."""
    for key, value in batch.items():
        if value is not None and not _finite_tensor(value):
            return f"{_BATCH_NAMES.get(key, key)} in the batch"
    return None


def parameter_groups(module: nn.Module) -> dict[str, list[nn.Parameter]]:
    """A module's trainable parameters grouped by their top-level submodule (``torso``, ``critic``, ...)."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if p.requires_grad:
            groups.setdefault(name.split(".", 1)[0], []).append(p)
    return groups


class NonFiniteGuard:
    """Decides, update by update, whether a learner may step its optimiser.

    ``policy``: ``skip`` (the default: the update is dropped, counted in :attr:`skipped`
    and logged) or ``stop`` (a :class:`NonFiniteError` naming the update and the source).
    ``owner`` names the learner in messages.
    """

    def __init__(self, policy: str = "skip", owner: str = "learner") -> None:
        self.policy = policy
        self.owner = owner
        self.updates = 0
        """Updates checked so far (the failing one's number is in the messages)."""
        self.skipped = 0
        """Updates skipped so far."""
        self.last_skipped = False
        """Whether the newest checked update was skipped."""

    @property
    def policy(self) -> str:
        return self._policy

    @policy.setter
    def policy(self, value: str) -> None:
        if value not in NONFINITE_POLICIES:
            from shoal.errors import ConfigError

            raise ConfigError(f"on_nonfinite must be skip or stop, got {value!r}")
        self._policy = value

    def metrics(self) -> dict[str, float]:
        """``{"nonfinite_updates": skipped so far}``, for a learner's step metrics."""
        return {SKIPPED_METRIC: float(self.skipped)}

    @staticmethod
    @torch.no_grad()
    def batch_verdict(batch: Mapping[str, Any]) -> torch.Tensor | bool:
        """Whether every float field of ``batch`` is finite, as a device tensor where it holds tensors (no host
        sync): computed once for the many minibatches of one rollout and handed to :meth:`check` as ``batch_ok``."""
        tensors: list[torch.Tensor] = []
        ok = True
        for value in batch.values():
            if isinstance(value, torch.Tensor):
                if value.is_floating_point():
                    tensors.append(value)
            elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
                ok = ok and bool(np.isfinite(value).all())
        if not tensors:
            return ok
        verdict = _all_finite(tensors)
        return verdict if ok else torch.zeros_like(verdict)

    @torch.no_grad()
    def check(self, losses: torch.Tensor | Sequence[torch.Tensor], groups: Mapping[str, Iterable[torch.Tensor]],
              batch: Mapping[str, Any] | None = None, collective: Any = None,
              batch_ok: torch.Tensor | bool | None = None) -> bool:
        """True when ``losses``, the gradients of ``groups`` (name -> parameters) and the float fields of
        ``batch`` (name -> tensor or array: the update's inputs) are all finite.

        Otherwise the gradients are dropped (``.grad`` zeroed) and the update is skipped
        (False) or, with ``policy="stop"``, a :class:`NonFiniteError` names it and the source.
        The inputs are checked as well because a loss may clamp an inf away (a categorical
        critic's support). ``collective`` (a learner group's :class:`~shoal.core.distributed.Collective`):
        every rank learns whether any rank failed, so all skip the same update. ``batch_ok``:
        :meth:`batch_verdict` of ``batch`` taken before (then ``batch`` is not scanned again, only
        searched for the source of a failure).
        """
        self.updates += 1
        loss_list = [losses] if isinstance(losses, torch.Tensor) else list(losses)
        named = {name: [p for p in ps] for name, ps in groups.items()}
        grads = [p.grad for ps in named.values() for p in ps if p.grad is not None]
        values = [loss.detach() for loss in loss_list if loss.is_floating_point()]
        if grads:
            values.extend(torch._foreach_norm(grads))  # an inf or NaN anywhere in a gradient makes its norm one
        ok = True
        # NaN in, NaN out, except where a loss clamps it (a support's ends): the inputs are judged too.
        if batch_ok is None:
            ok = _numpy_fields_finite(batch or {})
            values.extend(v for v in (batch or {}).values() if isinstance(v, torch.Tensor) and v.is_floating_point())
        elif not isinstance(batch_ok, torch.Tensor):
            ok = bool(batch_ok)
        verdict = _all_finite(values) if values else None
        if isinstance(batch_ok, torch.Tensor):
            verdict = batch_ok.all() if verdict is None else verdict & batch_ok.to(verdict.device).all()
        if verdict is not None:
            ok = ok and bool(verdict)  # the one host sync
        here_ok = ok
        if collective is not None:
            ok = collective.all_true(ok)
        self.last_skipped = not ok
        if ok:
            return True
        source = self._source(loss_list, named, batch) if not here_ok else "value on another learner rank"
        for g in grads:
            g.zero_()
        self.reject(source)
        return False

    def check_flat(self, grad: torch.Tensor, what: str = "gradient") -> bool:
        """:meth:`check` for a flat gradient vector computed elsewhere (gradients as values)."""
        self.updates += 1
        ok = bool(torch.isfinite(grad).all())
        self.last_skipped = not ok
        if not ok:
            self.reject(f"{what} received")
        return ok

    def check_value(self, value: float, source: str) -> bool:
        """For updates without tensors (a Q-table's TD target): True when ``value`` is finite, else skip or stop."""
        self.updates += 1
        ok = math.isfinite(value)
        self.last_skipped = not ok
        if not ok:
            self.reject(source)
        return ok

    def reject(self, source: str, update: int | None = None) -> None:
        """Count one skipped update from ``source`` (the caller's update number ``update``, if it counts its own),
        or raise under ``policy="stop"``."""
        if update is not None:
            self.updates = update
        self.skipped += 1
        if self.policy == "stop":
            raise NonFiniteError(f"{self.owner}: update {self.updates} has a non-finite {source} (NaN or inf); "
                                 "find its cause, or set on_nonfinite=skip to skip such updates")
        if self.skipped == 1 or self.skipped & (self.skipped - 1) == 0:  # 1st, 2nd, 4th, 8th, ...: the log stays short
            _log.warning("%s: update %d has a non-finite %s (NaN or inf); skipped it (%d skipped so far)",
                         self.owner, self.updates, source, self.skipped)

    @staticmethod
    def _source(losses: list[torch.Tensor], groups: Mapping[str, list[torch.Tensor]],
                batch: Mapping[str, Any] | None) -> str:
        if batch is not None:
            found = _batch_source(batch)
            if found is not None:
                return found
        for i, loss in enumerate(losses):
            if not _finite_tensor(loss.detach()):
                return "loss" if len(losses) == 1 else f"loss (term {i})"
        for name, ps in groups.items():
            if any(p.grad is not None and not _finite_tensor(p.grad) for p in ps):
                return f"gradient of {name}"
        return "gradient norm (it overflowed)"


def named_guards(obj: Any) -> dict[str, NonFiniteGuard]:
    """The guards a learner holds, by where it holds them (``guard``, ``levels.low.guard``): its own, and those
    of the sub-learners it holds directly or in a dict or list."""
    if not hasattr(obj, "__dict__"):
        return {}
    found: dict[str, NonFiniteGuard] = {}
    for name, v in vars(obj).items():
        members = ([(f"{name}.{k}", m) for k, m in v.items()] if isinstance(v, dict)
                   else [(f"{name}.{i}", m) for i, m in enumerate(v)] if isinstance(v, (list, tuple)) else [(name, v)])
        for where, m in members:
            if isinstance(m, NonFiniteGuard):
                g: Any = m
            else:
                g, where = getattr(m, "guard", None) if hasattr(m, "__dict__") else None, f"{where}.guard"
            if isinstance(g, NonFiniteGuard) and all(g is not f for f in found.values()):
                found[where] = g
    return found


def guards_of(obj: Any) -> list[NonFiniteGuard]:
    """The guards a learner holds: its own, and those of the sub-learners it holds directly or in a dict or list."""
    return list(named_guards(obj).values())


#: The entry of every learner's ``state()`` that holds its guards' counters (JSON numbers, no tensors).
STATE_KEY = "nonfinite_guards"


def guard_state(obj: Any) -> dict[str, dict[str, int]]:
    """The counters of every guard ``obj`` holds, by :func:`named_guards`' names: what a checkpoint keeps."""
    return {name: {"skipped": g.skipped, "updates": g.updates} for name, g in named_guards(obj).items()}


def load_guard_state(obj: Any, state: Mapping[str, Any]) -> None:
    """Restore :func:`guard_state`; a guard it does not name keeps its counters (0 for a new learner)."""
    for name, g in named_guards(obj).items():
        counts = state.get(name)
        if isinstance(counts, Mapping):
            g.skipped = int(counts.get("skipped", g.skipped))
            g.updates = int(counts.get("updates", g.updates))


def checkpoint_guards(cls: type) -> type:
    """Make ``cls.state()`` carry its guards' counters under :data:`STATE_KEY` and ``cls.load_state()`` restore
    them, so ``nonfinite_updates`` goes on counting after a resume. Every :class:`~shoal.core.interfaces.Learner`
    subclass gets this; a state without the entry (a checkpoint older than it) leaves the counters as they are.

    Only ``state``/``load_state`` defined on ``cls`` itself are wrapped (inherited ones already are); the entry is
    taken out of the state before the learner's own ``load_state`` sees it, and the counters are set after it, so
    a ``super().load_state`` chain ends with the saved values.
    """
    def wraps_own(name: str) -> Any:  # the method ``name`` defined on cls itself and not yet wrapped, or None
        f = cls.__dict__.get(name)
        wrapped = getattr(f, "_checkpoints_guards", False) or getattr(f, "__isabstractmethod__", False)
        return f if callable(f) and not wrapped else None

    own_state, own_load = wraps_own("state"), wraps_own("load_state")
    if own_state is not None:
        @functools.wraps(own_state)
        def state(self: Any) -> Any:
            out = own_state(self)
            return {**out, STATE_KEY: guard_state(self)} if isinstance(out, dict) else out

        state._checkpoints_guards = True  # type: ignore[attr-defined]
        cls.state = state  # type: ignore[attr-defined]
    if own_load is not None:
        @functools.wraps(own_load)
        def load_state(self: Any, state: Any) -> None:
            counts = None
            if isinstance(state, Mapping) and STATE_KEY in state:
                state = dict(state)
                counts = state.pop(STATE_KEY)
            own_load(self, state)
            if isinstance(counts, Mapping):  # after the learner's own restore (and its super() chain): these win
                load_guard_state(self, counts)

        load_state._checkpoints_guards = True  # type: ignore[attr-defined]
        cls.load_state = load_state  # type: ignore[attr-defined]
    return cls


def configure(obj: Any, policy: str) -> None:
    """Set ``policy`` on every guard a learner holds."""
    for g in guards_of(obj):
        g.policy = policy
