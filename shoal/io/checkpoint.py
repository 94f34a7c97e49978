"""Checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint named ``NAME`` is ``NAME.safetensors`` and ``NAME.json``, plus
``NAME.detached.safetensors`` when its tree holds :class:`Detachable` subtrees (replay
tables): those are large, so they get a file of their own that :func:`drop_detached`
can delete from older checkpoints while the rest stays loadable. The JSON is written
last and records the SHA-256 of every tensor file, so a checkpoint is complete exactly
when its JSON exists and the hashes match. Any nested structure of dicts (string keys),
lists, tensors, numpy arrays and JSON scalars round-trips.

Files are hashed in chunks (no second copy in memory) and read once on load: each tensor
file is read chunk by chunk into one buffer, hashed as it arrives, and its tensors are
views of that buffer.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from shoal.errors import CheckpointError, CheckpointFormatError, ShoalWarning
from shoal.io.modes import make_default_mode

_TENSOR = "__tensor__"
_NDARRAY = "__ndarray__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"
_DETACHED = "__detached__"
FORMAT_VERSION = 2  # 2: optional detached tensor file; version 1 files load unchanged
_CHUNK = 16 << 20
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool, "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64}


class Detachable(dict):
    """A subtree saved in the checkpoint's detached tensor file, which older checkpoints may drop.

    A checkpoint whose detached file was dropped loads without these entries (the dict key
    is absent), so whatever restores them must treat them as optional.
    """


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
            make_default_mode(f.fileno())  # mkstemp's files are 0600; give the mode open() would
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(folder: Path) -> None:
    """Make the renames and deletions in ``folder`` durable (a power loss keeps them or none after)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write a text file."""
    atomic_write_bytes(path, text.encode("utf-8"))


class _Splitter:
    """Replaces tensors/arrays in a tree by references, collecting them per tensor file."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.detached: dict[str, torch.Tensor] | None = None  # set once a Detachable is met
        self._seen: set[int] = set()

    def split(self, tree: Any, prefix: str, out: dict[str, torch.Tensor]) -> Any:
        if isinstance(tree, Detachable) and out is self.tensors:
            if self.detached is None:
                self.detached = {}
            return {_DETACHED: self.split(dict(tree), prefix, self.detached)}
        if isinstance(tree, torch.Tensor):
            # Copies: safetensors refuses tensors that share memory (views, tied weights).
            out[prefix] = tree.detach().to("cpu", copy=True).contiguous()
            return {_TENSOR: prefix}
        if isinstance(tree, np.ndarray):
            # An array owning its memory is saved in place (a replay table is large); views,
            # read-only and repeated arrays are copied, since they may share memory.
            f = tree.flags
            own = f.c_contiguous and f.owndata and f.writeable and id(tree) not in self._seen
            self._seen.add(id(tree))
            out[prefix] = torch.from_numpy(tree if own else np.array(tree, copy=True, order="C"))
            return {_NDARRAY: prefix}
        if isinstance(tree, dict):
            if tree and all(isinstance(k, int) and not isinstance(k, bool) for k in tree):
                return {_INTKEYS: {str(k): self.split(v, f"{prefix}/{k}", out) for k, v in tree.items()}}
            res = {}
            for k, v in tree.items():
                if not isinstance(k, str):
                    raise TypeError(f"checkpoint dict keys must be all strings or all ints, got {k!r}")
                res[k] = self.split(v, f"{prefix}/{k}" if prefix else k, out)
            return res
        if isinstance(tree, (list, tuple)):
            items = [self.split(v, f"{prefix}/{i}", out) for i, v in enumerate(tree)]
            return {_TUPLE: items} if isinstance(tree, tuple) else items
        if isinstance(tree, (np.integer,)):
            return int(tree)
        if isinstance(tree, (np.floating,)):
            return float(tree)
        if tree is None or isinstance(tree, (bool, int, float, str)):
            return tree
        raise TypeError(f"cannot checkpoint a value of type {type(tree).__name__} at {prefix!r}")


_DROPPED = object()


def _join(tree: Any, tensors: dict[str, torch.Tensor], detached: dict[str, torch.Tensor] | None) -> Any:
    if isinstance(tree, dict):
        if _DETACHED in tree and len(tree) == 1:
            if tree[_DETACHED] is None or detached is None:
                return _DROPPED
            return Detachable(_join(tree[_DETACHED], detached, None))
        if _TENSOR in tree and len(tree) == 1:
            return tensors[tree[_TENSOR]]
        if _NDARRAY in tree and len(tree) == 1:
            return tensors[tree[_NDARRAY]].numpy()
        if _TUPLE in tree and len(tree) == 1:
            return tuple(_join(v, tensors, detached) for v in tree[_TUPLE])
        if _INTKEYS in tree and len(tree) == 1:
            return {int(k): _join(v, tensors, detached) for k, v in tree[_INTKEYS].items()}
        out = {k: _join(v, tensors, detached) for k, v in tree.items()}
        return {k: v for k, v in out.items() if v is not _DROPPED}
    if isinstance(tree, list):
        return [None if v is _DROPPED else v for v in (_join(v, tensors, detached) for v in tree)]
    return tree


def _detached_path(weights_path: Path) -> Path:
    return weights_path.with_name(weights_path.name.replace(".safetensors", ".detached.safetensors"))


def _sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    buf = bytearray(min(_CHUNK, max(1, path.stat().st_size)))
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            h.update(view[:n])
    return h.hexdigest()


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write ``tensors`` to ``path`` atomically (temp file, fsync, rename); returns the file's SHA-256."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        try:
            save_file(tensors, tmp)
        except SafetensorError as e:  # safetensors reports I/O failures (disk full, file too large) as its own type
            m = re.search(r"os error (\d+)", str(e))
            code = int(m.group(1)) if m else errno.EIO
            raise OSError(code, os.strerror(code), tmp) from None
        digest = _sha256_file(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def save_checkpoint(path_prefix: Path, tree: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
    """Save ``tree`` as ``<prefix>.safetensors`` (+ ``<prefix>.detached.safetensors``) + ``<prefix>.json``.

    Returns the JSON path. :class:`Detachable` subtrees go to the detached file.
    """
    path_prefix = Path(path_prefix)
    splitter = _Splitter()
    structure = splitter.split(tree, "", splitter.tensors)
    weights_path = path_prefix.with_suffix(".safetensors")
    json_path = path_prefix.with_suffix(".json")
    path_prefix.parent.mkdir(parents=True, exist_ok=True)
    detached = None
    written: list[Path] = []
    try:
        if splitter.detached is not None:
            dpath = _detached_path(weights_path)
            detached = {"weights": dpath.name, "sha256": _write_tensors(dpath, splitter.detached),
                        "bytes": dpath.stat().st_size}
            written.append(dpath)
        digest = _write_tensors(weights_path, splitter.tensors)
        written.append(weights_path)
        doc = {"format": FORMAT_VERSION, "weights": weights_path.name, "sha256": digest, "detached": detached,
               "meta": meta or {}, "tree": structure}
        atomic_write_text(json_path, json.dumps(doc))
    except BaseException:
        # No JSON: the tensor files written so far belong to no checkpoint; the older checkpoints
        # (other names) are untouched.
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return json_path


def _read_tensors(path: Path, expected: str, json_path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file once: chunks into one buffer, hashed as they arrive; tensors view the buffer."""
    fallback = "delete it to fall back to an earlier one"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {json_path} refers to missing {path.name}; {fallback}") from None
    buf = np.empty(size, dtype=np.uint8)  # not zero-filled: every byte is read into it
    view = buf.data  # a writable memoryview of the array's bytes
    h = hashlib.sha256()
    pos = 0
    # Hash chunk i on a second thread while chunk i + 1 is read (both release the GIL).
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {json_path} refers to missing {path.name}; {fallback}") from None
    try:
        with f, ThreadPoolExecutor(1) as pool:
            hashing: Future[None] | None = None
            while pos < size and (n := f.readinto(view[pos:pos + _CHUNK])):
                if hashing is not None:
                    hashing.result()
                hashing = pool.submit(h.update, view[pos:pos + n])
                pos += n
            if hashing is not None:
                hashing.result()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({e.strerror}); {fallback}") from None
    if pos != size or h.hexdigest() != expected:
        raise CheckpointError(f"checkpoint {path} is corrupt (checksum mismatch); {fallback}")
    try:
        return _parse_safetensors(buf)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({e}); {fallback}") from None


def _parse_safetensors(buf: np.ndarray) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file held in ``buf``, as views of it (no copy)."""
    if len(buf) < 8:
        raise ValueError("file shorter than its header")
    n = int.from_bytes(buf[:8].tobytes(), "little")
    start = 8 + n
    if start > len(buf):
        raise ValueError("header longer than the file")
    header = json.loads(buf[8:start].tobytes())
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"unsupported dtype {info['dtype']}")
        shape = [int(d) for d in info["shape"]]
        begin, end = (int(x) for x in info["data_offsets"])
        count = math.prod(shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if end - begin != count * itemsize or begin < 0 or start + end > len(buf):
            raise ValueError(f"tensor {name!r} lies outside the file")
        if count == 0:
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            out[name] = torch.frombuffer(buf, dtype=dtype, count=count, offset=start + begin).reshape(shape)
    return out


def _own_file(name: Any, stem: str) -> bool:
    """Whether ``name`` is one of the checkpoint ``stem``'s own tensor files, in its folder (so a crafted
    JSON reaches no other file): ``<stem>.safetensors`` or ``<stem>.detached.safetensors``."""
    return name in (f"{stem}.safetensors", f"{stem}.detached.safetensors")


def _read_doc(json_path: Path) -> tuple[Path, dict[str, Any]]:
    json_path = Path(json_path)
    if json_path.suffix != ".json":
        json_path = json_path.with_suffix(".json")
    if not json_path.exists():
        raise CheckpointError(f"checkpoint {json_path} does not exist; pass a run directory or checkpoint that exists")
    try:
        text = json_path.read_text()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {json_path} does not exist; pass a run directory or checkpoint that exists") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {json_path} is unreadable ({e.strerror}); delete it to fall back to an earlier one") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"checkpoint {json_path} is corrupt (not text); delete it to fall back to an earlier one") from None
    try:
        doc = json.loads(text)
        fmt = doc.get("format", 1)
        if isinstance(fmt, int) and fmt > FORMAT_VERSION:  # intact but newer: before any field is judged missing
            raise CheckpointFormatError(f"checkpoint {json_path} has format {fmt}, newer than this shoal reads "
                                        f"({FORMAT_VERSION}); upgrade shoal to load it")
        files = [doc] + ([doc["detached"]] if doc.get("detached") is not None else [])
        complete = "tree" in doc and all(isinstance(f["weights"], str) and isinstance(f["sha256"], str) for f in files)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        complete, why = False, e.__class__.__name__
    else:
        why = "missing fields"
    if complete and not all(_own_file(f["weights"], json_path.stem) for f in files):
        complete, why = False, "a tensor file outside its folder"
    if not complete:
        raise CheckpointError(f"checkpoint {json_path} is corrupt ({why}); delete it to fall back to an earlier one")
    if not isinstance(doc.get("format", 1), int):
        raise CheckpointError(f"checkpoint {json_path} is corrupt (its format is not a number); delete it to fall back "
                              "to an earlier one")
    return json_path, doc


def load_checkpoint(json_path: Path, detached: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a checkpoint saved by :func:`save_checkpoint`; returns ``(tree, meta)``.

    With ``detached=False``, or once :func:`drop_detached` removed it, the tree comes back
    without its :class:`Detachable` entries. Raises :class:`CheckpointError` naming the
    file if it is missing, truncated or corrupt.
    """
    json_path, doc = _read_doc(json_path)
    tensors = _read_tensors(json_path.parent / doc["weights"], doc["sha256"], json_path)
    extra = None
    if detached and doc.get("detached") is not None:
        extra = _read_tensors(json_path.parent / doc["detached"]["weights"], doc["detached"]["sha256"], json_path)
    return _join(doc["tree"], tensors, extra), doc.get("meta", {})


def detached_dropped(json_path: Path) -> bool:
    """Whether the checkpoint was saved with :class:`Detachable` entries that were dropped since."""
    return bool(_read_doc(json_path)[1].get("dropped", False))


def _strip(tree: Any) -> Any:
    if isinstance(tree, dict):
        if _DETACHED in tree and len(tree) == 1:
            return {_DETACHED: None}
        return {k: _strip(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_strip(v) for v in tree]
    return tree


def drop_detached(json_path: Path) -> None:
    """Delete a checkpoint's detached tensor file; the checkpoint then loads without its Detachable entries.

    The JSON is rewritten first, so it never refers to a missing file.
    """
    json_path, doc = _read_doc(json_path)
    if doc.get("detached") is None:
        return
    path = json_path.parent / doc["detached"]["weights"]
    doc.update(detached=None, dropped=True, tree=_strip(doc["tree"]))
    atomic_write_text(json_path, json.dumps(doc))
    path.unlink(missing_ok=True)


def delete_checkpoint(json_path: Path) -> None:
    """Delete a checkpoint: its JSON first (so it is never listed half-deleted), then its tensor files."""
    json_path = Path(json_path)
    try:
        doc = json.loads(json_path.read_text())
        names = [doc.get("weights"), (doc.get("detached") or {}).get("weights")]
    except (OSError, ValueError, TypeError, AttributeError):
        names = []
    weights = json_path.with_suffix(".safetensors")
    names += [weights.name, _detached_path(weights).name]
    json_path.unlink(missing_ok=True)
    for name in {n for n in names if _own_file(n, json_path.stem)}:
        (json_path.parent / name).unlink(missing_ok=True)


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


def checkpoint_files(json_path: Path) -> list[Path]:
    """Every file of a checkpoint that exists: its JSON and the tensor files named after it."""
    json_path = Path(json_path)
    weights = json_path.with_suffix(".safetensors")
    return [p for p in (json_path, weights, _detached_path(weights)) if p.exists()]


def quarantine_checkpoint(json_path: Path) -> Path:
    """Move every file of a checkpoint into ``corrupt/<name>.<UTC time>/`` beside it; returns that folder.

    The checkpoint is kept for inspection, never listed again, and a later checkpoint of the
    same step cannot overwrite it.
    """
    json_path = Path(json_path)
    dest = json_path.parent / "corrupt" / f"{json_path.stem}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    n = 0
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{dest.name.split('~')[0]}~{n}")
    dest.mkdir(parents=True)
    for p in checkpoint_files(json_path):
        shutil.move(str(p), dest / p.name)
    fsync_dir(json_path.parent)
    return dest


def _set_aside(bad: list[Path]) -> None:
    """Quarantine each unusable checkpoint, with a warning naming where it went."""
    for b in bad:
        try:
            dest = quarantine_checkpoint(b)
        except OSError as e:
            raise CheckpointError(f"could not set the unusable checkpoint {b} aside ({e.strerror}); move it out of "
                                  "the checkpoints folder by hand and resume again") from None
        warnings.warn(f"set {b.name} aside in {dest}", ShoalWarning, stacklevel=2)


def load_newest_checkpoint(folder: Path, detached: bool = True,
                           quarantine: bool = False) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The newest checkpoint in ``folder`` that loads: ``(json_path, tree, meta)``.

    A newer checkpoint that is corrupt, truncated or missing a file (its checksums say so)
    is passed over with a warning naming it, and the one before it is tried. When only its
    detached file (the replay) is bad, the checkpoint loads without it, with a warning. With
    ``quarantine``, once a good checkpoint is found, the unusable newer ones are moved into
    ``corrupt/`` (see :func:`quarantine_checkpoint`), so the run that resumes does not meet
    them again; when none loads, nothing is moved. A checkpoint of a newer format is never
    passed over (:class:`CheckpointFormatError`). Raises :class:`CheckpointError` when none loads.
    """
    folder = Path(folder)
    first_error: CheckpointError | None = None
    bad: list[Path] = []
    for _attempt in range(3):  # a checkpoint pruned by a live run between listing and reading: list again
        ckpts = list_checkpoints(folder)
        if not ckpts:
            raise CheckpointError(f"no checkpoint in {folder}; train the run first (or start it again without --resume)")
        pruned = False
        for i in range(len(ckpts) - 1, -1, -1):
            path = ckpts[i]
            if path in bad:
                continue
            try:
                tree, meta = load_checkpoint(path, detached=detached)
            except CheckpointFormatError:
                raise
            except CheckpointError as e:
                if not path.exists():
                    pruned = True
                    break
                if detached:
                    try:
                        tree, meta = load_checkpoint(path, detached=False)
                    except CheckpointError:
                        pass
                    else:
                        warnings.warn(f"{str(e).split('; ')[0]}; loading {path.name} without its replay, which "
                                      "refills as the actors run", ShoalWarning, stacklevel=2)
                        if quarantine:
                            _set_aside(bad)
                        return path, tree, meta
                first_error = first_error or e
                bad.append(path)
                nxt = f"falling back to {ckpts[i - 1].name}" if i > 0 else "no earlier checkpoint is left"
                warnings.warn(f"{str(e).split('; ')[0]}; {nxt}", ShoalWarning, stacklevel=2)
                continue
            if quarantine:
                _set_aside(bad)
            return path, tree, meta
        if not pruned:
            break
    if first_error is None:
        raise CheckpointError(f"the checkpoints in {folder} kept disappearing while being read; another process is "
                              "pruning them (a run still training there?): try again once it ends")
    raise CheckpointError(f"no usable checkpoint in {folder}: every one is corrupt or incomplete "
                          f"(newest: {str(first_error).split('; ')[0]}); start a new run with another --run-dir") from None
