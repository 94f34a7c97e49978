"""Devices: where a learner's tensors live and how data and noise get there.

Placement rules (the same on every backend):

- Only learners use an accelerator. Actors, replay and evaluation run on the CPU, and
  learners hand their parameters out as CPU copies (``get_variables``).
- A learner node asks its backend for ``learner_gpus(device)`` GPUs: one when the run's
  device is ``cuda``/``cuda:N``, none otherwise (on Ray this is what makes a GPU visible
  to the learner's process at all).
- ``device=auto`` is resolved by the backend that places the learner
  (:meth:`shoal.backends.base.Backend.resolve_device`), not by the driver's own hardware:
  in-process it means this process's GPU; on Ray it means "cuda if the cluster has a GPU",
  because a driver without a GPU may drive a cluster that has one (and vice versa).
- Host batches bound for a GPU are pinned and copied asynchronously (:func:`to_device`);
  learners draw random numbers with CPU generators and move them (:func:`randn`), so a
  seed gives the same run on either device, up to floating-point rounding.
"""

from __future__ import annotations

from typing import Sequence

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; host tensors bound for CUDA go through pinned memory, asynchronously."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def learner_gpus(device: str) -> float:
    """GPUs a learner node on ``device`` must be placed with: 1 for ``cuda``/``cuda:N``, else 0."""
    return 1.0 if str(device).startswith("cuda") else 0.0


def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal noise drawn with ``generator`` on the generator's own device, then placed on ``device``.

    A CPU generator therefore gives the same numbers whether the learner runs on the CPU or
    a GPU (a CUDA generator seeded alike would not); on the CPU this is a plain ``torch.randn``.
    """
    source = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(tuple(shape), generator=generator, device=source, dtype=dtype)
    return to_device(noise, torch.device(device))
