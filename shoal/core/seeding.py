"""Deriving every seed of a run from the run seed."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator


def derive_seed(run_seed: int, *path: object) -> int:
    """A stable 31-bit seed for a named part of a run, e.g. ``derive_seed(0, "actor", 3)``."""
    text = ":".join([str(run_seed), *map(str, path)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


@contextmanager
def seeded_global_rngs(run_seed: int) -> Iterator[None]:
    """Run a block with torch's (CPU) and numpy's global generators seeded from ``run_seed``.

    Network initialisation draws from the global generators; seeding them here gives every
    node, in this process or another, the same initial weights. The caller's generator
    states are restored on exit, so building networks never reseeds a user's process.
    """
    import numpy as np
    import torch

    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(run_seed, "init"))
        np.random.seed(derive_seed(run_seed, "numpy") % (2**32))
        try:
            yield
        finally:
            np.random.set_state(np_state)
