"""Deriving every seed of a run from the run seed."""

from __future__ import annotations

import hashlib


def derive_seed(run_seed: int, *path: object) -> int:
    """A stable 31-bit seed for a named part of a run, e.g. ``derive_seed(0, "actor", 3)``."""
    text = ":".join([str(run_seed), *map(str, path)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF
