"""Save and restore a replay table with the run's atomic checkpoint format."""

from __future__ import annotations

from pathlib import Path

from shoal.data.table import ReplayTable
from shoal.io.checkpoint import load_checkpoint, save_checkpoint

_KIND = "shoal.replay_table"


def save_table(table: ReplayTable, path: str | Path) -> Path:
    """Write ``table.state()`` to ``<path>.safetensors`` + ``<path>.json`` atomically; returns the JSON path."""
    return save_checkpoint(Path(path), table.state(), meta={"kind": _KIND, "name": table.name, "size": len(table)})


def load_table(table: ReplayTable, path: str | Path) -> ReplayTable:
    """Restore a table saved by :func:`save_table` into ``table`` (built the same way); returns it."""
    tree, _ = load_checkpoint(Path(path).with_suffix(".json"))
    table.load_state(tree)
    return table
