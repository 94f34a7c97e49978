"""Checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint named ``NAME`` is two files, ``NAME.safetensors`` and ``NAME.json``. The JSON
is written last and records the SHA-256 of the tensor file, so a checkpoint is complete
exactly when its JSON exists and the hash matches. Any nested structure of dicts (string
keys), lists, tensors, numpy arrays and JSON scalars round-trips.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from shoal.errors import CheckpointError

_TENSOR = "__tensor__"
_NDARRAY = "__ndarray__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"
FORMAT_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write a text file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _split(tree: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors/arrays in ``tree`` by references, collecting them into ``tensors``."""
    if isinstance(tree, torch.Tensor):
        # Copies: safetensors refuses tensors that share memory (views, tied weights).
        tensors[prefix] = tree.detach().to("cpu", copy=True).contiguous()
        return {_TENSOR: prefix}
    if isinstance(tree, np.ndarray):
        tensors[prefix] = torch.from_numpy(np.array(tree, copy=True, order="C"))
        return {_NDARRAY: prefix}
    if isinstance(tree, dict):
        if tree and all(isinstance(k, int) and not isinstance(k, bool) for k in tree):
            return {_INTKEYS: {str(k): _split(v, f"{prefix}/{k}", tensors) for k, v in tree.items()}}
        out = {}
        for k, v in tree.items():
            if not isinstance(k, str):
                raise TypeError(f"checkpoint dict keys must be all strings or all ints, got {k!r}")
            out[k] = _split(v, f"{prefix}/{k}" if prefix else k, tensors)
        return out
    if isinstance(tree, (list, tuple)):
        items = [_split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(tree)]
        return {_TUPLE: items} if isinstance(tree, tuple) else items
    if isinstance(tree, (np.integer,)):
        return int(tree)
    if isinstance(tree, (np.floating,)):
        return float(tree)
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot checkpoint a value of type {type(tree).__name__} at {prefix!r}")


def _join(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if _TENSOR in tree and len(tree) == 1:
            return tensors[tree[_TENSOR]]
        if _NDARRAY in tree and len(tree) == 1:
            return tensors[tree[_NDARRAY]].numpy()
        if _TUPLE in tree and len(tree) == 1:
            return tuple(_join(v, tensors) for v in tree[_TUPLE])
        if _INTKEYS in tree and len(tree) == 1:
            return {int(k): _join(v, tensors) for k, v in tree[_INTKEYS].items()}
        return {k: _join(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, tensors) for v in tree]
    return tree


def save_checkpoint(path_prefix: Path, tree: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
    """Save ``tree`` as ``<prefix>.safetensors`` + ``<prefix>.json``; returns the JSON path."""
    path_prefix = Path(path_prefix)
    tensors: dict[str, torch.Tensor] = {}
    structure = _split(tree, "", tensors)
    weights_path = path_prefix.with_suffix(".safetensors")
    json_path = path_prefix.with_suffix(".json")
    path_prefix.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{weights_path.name}.", suffix=".tmp", dir=path_prefix.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp)
        with open(tmp, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
            os.fsync(f.fileno())
        os.replace(tmp, weights_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    doc = {"format": FORMAT_VERSION, "weights": weights_path.name, "sha256": digest,
           "meta": meta or {}, "tree": structure}
    atomic_write_text(json_path, json.dumps(doc))
    return json_path


def load_checkpoint(json_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a checkpoint saved by :func:`save_checkpoint`; returns ``(tree, meta)``.

    Raises :class:`CheckpointError` naming the file if it is missing, truncated or corrupt.
    """
    json_path = Path(json_path)
    if json_path.suffix != ".json":
        json_path = json_path.with_suffix(".json")
    if not json_path.exists():
        raise CheckpointError(f"checkpoint {json_path} does not exist; pass a run directory or checkpoint that exists")
    try:
        doc = json.loads(json_path.read_text())
        weights_path = json_path.parent / doc["weights"]
        expected = doc["sha256"]
        structure = doc["tree"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {json_path} is corrupt ({e.__class__.__name__}); delete it to fall back to an earlier one") from None
    if not weights_path.exists():
        raise CheckpointError(f"checkpoint {json_path} refers to missing {weights_path.name}; delete it to fall back to an earlier one")
    data = weights_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(f"checkpoint {weights_path} is corrupt (checksum mismatch); delete it to fall back to an earlier one")
    try:
        tensors = load_file(str(weights_path))
    except Exception as e:  # safetensors raises several types on bad headers
        raise CheckpointError(f"checkpoint {weights_path} is unreadable ({e}); delete it to fall back to an earlier one") from None
    return _join(structure, tensors), doc.get("meta", {})


def list_checkpoints(folder: Path) -> list[Path]:
    """JSON files of the checkpoints in ``folder``, oldest first (by step in the name)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []

    def step_of(p: Path) -> int:
        try:
            return int(p.stem.rsplit("-", 1)[-1])
        except ValueError:
            return -1

    return sorted(folder.glob("ckpt-*.json"), key=step_of)
