"""A storage for stacked-frame observations that keeps each distinct frame once.

Atari observations are stacks of the last few frames, so consecutive steps share all
but one frame, and a transition's ``obs`` and ``next_obs`` share all but one too. This
storage splits every stack into frames, finds frames it already holds by a content
fingerprint (checked byte for byte, so a match is never wrong), and stores only new
ones in a shared pool; an item keeps the pool positions of its frames. Frames are
reference counted, so a frame stays as long as any stored item uses it and items
never read overwritten frames. When the pool is full the table evicts its oldest
items until enough frames are free (see :meth:`Storage.shortfall`).

Nothing about episodes is assumed: an episode's first stack (the reset frame repeated)
simply holds one distinct frame, and streams from many env copies interleave freely.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np

from shoal.data.storage import ArrayStorage, Storage, batch_size
from shoal.errors import ShoalError

_CHUNK = 256  # rows per numpy call: about 2 MB of Atari frames, so the work stays in cache


def _rows_equal(a: np.ndarray, ia: np.ndarray, b: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """``a[ia] == b[ib]`` row by row (uint8 rows whose width is a multiple of 8), in cache-sized chunks."""
    a64, b64 = a.view(np.uint64), b.view(np.uint64)
    out = np.empty(len(ia), dtype=bool)
    for i in range(0, len(ia), _CHUNK):
        out[i:i + _CHUNK] = (a64[ia[i:i + _CHUNK]] == b64[ib[i:i + _CHUNK]]).all(axis=1)
    return out


class FrameStackStorage(Storage):
    """Items whose ``frame_fields`` are ``[stack, *frame_shape]`` stacks, stored frame by frame.

    ``frame_capacity`` is the size of the frame pool (default: ``capacity`` plus 1/16 plus
    64, enough when items add about one new frame each; if frames run out first, the table
    evicts old items early and holds fewer than ``capacity``); ``dedup_window`` is
    how many recently stored frames are looked up by fingerprint.
    """

    def __init__(self, capacity: int, frame_fields: Sequence[str] = ("obs", "next_obs"),
                 frame_capacity: int | None = None, dedup_window: int = 16384) -> None:
        self.capacity = int(capacity)
        self.frame_fields = tuple(frame_fields)
        self.frame_capacity = int(frame_capacity or self.capacity + self.capacity // 16 + 64)
        self.dedup_window = int(dedup_window)
        self.other = ArrayStorage(self.capacity)
        self.frames: np.ndarray | None = None
        self.stack = 0
        self._recent: dict[int, int] = {}
        self._older: dict[int, int] = {}

    # -- layout ---------------------------------------------------------------------------
    def _allocate(self, stack: int, frame_shape: tuple[int, ...], dtype: np.dtype) -> None:
        f = self.frame_capacity
        self.stack = stack
        self.frames = np.zeros((f, *frame_shape), dtype=dtype)
        self.refs = np.zeros((self.capacity, len(self.frame_fields) * stack), dtype=np.int32)
        self.refcount = np.zeros(f, dtype=np.int32)
        self.free_stack = np.arange(f - 1, -1, -1, dtype=np.int32)  # pop from the end
        self.num_free = f
        nbytes = int(np.prod(frame_shape)) * np.dtype(dtype).itemsize
        self._padded = max(16, -(-nbytes // 8) * 8)
        rng = np.random.default_rng(0x5EED)
        words = self._padded // 8
        self._w1 = rng.integers(0, 2**63, words, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._w2 = rng.integers(0, 2**63, words - 1, dtype=np.uint64) * np.uint64(2) + np.uint64(1)

    def _as_bytes(self, frames: np.ndarray) -> np.ndarray:
        """``[m, *frame_shape]`` -> ``[m, padded]`` uint8 rows (a view when no padding is needed)."""
        flat = np.ascontiguousarray(frames).reshape(len(frames), -1).view(np.uint8)
        if flat.shape[1] != self._padded:
            flat = np.pad(flat, ((0, 0), (0, self._padded - flat.shape[1])))
        return flat

    def _fingerprint(self, rows: np.ndarray) -> np.ndarray:
        """A 64-bit linear hash of each row; the second, 4-byte-shifted view keeps a difference
        in the top byte of a word from vanishing modulo 2**64. Chunked to stay in cache."""
        out = np.empty(len(rows), dtype=np.uint64)
        w = self._padded
        for i in range(0, len(rows), _CHUNK):
            c = rows[i:i + _CHUNK]
            shifted = np.ascontiguousarray(c[:, 4:w - 4]).view(np.uint64)
            out[i:i + _CHUNK] = c.view(np.uint64) @ self._w1 + shifted @ self._w2
        return out

    # -- insert ---------------------------------------------------------------------------
    def prepare(self, items: dict[str, np.ndarray]) -> dict[str, Any]:
        n = batch_size(items)
        missing = [f for f in self.frame_fields if f not in items]
        if missing:
            raise ShoalError(f"items lack the frame fields {missing}; pass them or set frame_fields")
        stacks = [np.asarray(items[f]) for f in self.frame_fields]
        first = stacks[0]
        if first.ndim < 3:
            raise ShoalError(f"frame field {self.frame_fields[0]!r} has shape {first.shape}; "
                             "expected [items, stack, *frame_shape]")
        if self.frames is None:
            self._allocate(first.shape[1], first.shape[2:], first.dtype)
        assert self.frames is not None
        for f, s in zip(self.frame_fields, stacks):
            if s.shape[1:] != (self.stack, *self.frames.shape[1:]) or s.dtype != self.frames.dtype:
                raise ShoalError(f"frame field {f!r} has per-item shape {s.shape[1:]} {s.dtype}, the storage holds "
                                 f"{(self.stack, *self.frames.shape[1:])} {self.frames.dtype}; keep one stack shape")
        other = {k: v for k, v in items.items() if k not in self.frame_fields}
        other_plan = self.other.prepare(other) if other else None

        frames = np.concatenate([s.reshape(n * self.stack, *s.shape[2:]) for s in stacks])  # field-major
        rows = self._as_bytes(frames)
        fp = self._fingerprint(rows)
        m = len(rows)
        _, first_idx, inverse = np.unique(fp, return_index=True, return_inverse=True)
        rep = first_idx[inverse.ravel()]
        dup = np.flatnonzero(rep != np.arange(m))
        differs = ~_rows_equal(rows, dup, rows, rep[dup])
        rep[dup[differs]] = dup[differs]  # fingerprint collision inside the batch: keep both
        reps = np.flatnonzero(rep == np.arange(m))
        clean = first_idx[inverse.ravel()[reps]] == reps  # reps whose fingerprint may name them

        pos = np.full(len(reps), -1, dtype=np.int64)
        for i in np.flatnonzero(clean):
            h = int(fp[reps[i]])
            pos[i] = self._recent.get(h, self._older.get(h, -1))
        hit = np.flatnonzero(pos >= 0)
        if len(hit):
            p = pos[hit]
            stored = self._as_bytes(self.frames[p])
            ok = (self.refcount[p] > 0) & _rows_equal(stored, np.arange(len(p)), rows, reps[hit])
            pos[hit[~ok]] = -1
        new = np.flatnonzero(pos < 0)
        if len(reps) > self.frame_capacity:  # then even an emptied pool could not take the batch
            raise ShoalError(f"an insert of {n} items holds {len(reps)} distinct frames but the frame pool holds "
                             f"{self.frame_capacity}; insert fewer items at once or raise frame_capacity")
        pos[new] = -1 - np.arange(len(new))  # placeholders until write() pops pool positions
        ref_flat = pos[np.searchsorted(reps, rep)]
        shared = ref_flat[ref_flat >= 0]
        np.add.at(self.refcount, shared, 1)  # pin shared frames so evictions cannot free them
        return {"n": n, "ref_flat": ref_flat, "new_frames": frames[reps[new]],
                "new_fp": fp[reps[new]], "new_clean": clean[new],
                "hit_fp": fp[reps[pos >= 0]], "hit_pos": pos[pos >= 0], "other": other_plan}

    def shortfall(self, plan: dict[str, Any]) -> int:
        return max(0, len(plan["new_frames"]) - self.num_free)

    def write(self, slots: np.ndarray, plan: dict[str, Any]) -> None:
        assert self.frames is not None
        u, n = len(plan["new_frames"]), plan["n"]
        if u > self.num_free:
            raise ShoalError(f"frame pool has {self.num_free} free frames, {u} needed; the table must evict first")
        new_pos = self.free_stack[self.num_free - u:self.num_free][::-1].astype(np.int64)
        self.num_free -= u
        self.frames[new_pos] = plan["new_frames"]
        ref_flat = plan["ref_flat"].copy()
        placeholder = ref_flat < 0
        ref_flat[placeholder] = new_pos[-1 - ref_flat[placeholder]]
        np.add.at(self.refcount, ref_flat[placeholder], 1)
        k = len(self.frame_fields)
        self.refs[slots] = ref_flat.reshape(k, n, self.stack).transpose(1, 0, 2).reshape(n, k * self.stack)
        recent = self._recent
        recent.update(zip(plan["hit_fp"].tolist(), plan["hit_pos"].tolist()))
        clean = plan["new_clean"]
        recent.update(zip(plan["new_fp"][clean].tolist(), new_pos[clean].tolist()))
        if len(recent) > self.dedup_window:
            self._older, self._recent = recent, {}
        if plan["other"] is not None:
            self.other.write(slots, plan["other"])

    def release(self, slots: np.ndarray) -> None:
        if self.frames is None or len(slots) == 0:
            return
        r = self.refs[slots].ravel()
        np.subtract.at(self.refcount, r, 1)
        touched = np.unique(r)
        freed = touched[self.refcount[touched] == 0].astype(np.int32)
        self.free_stack[self.num_free:self.num_free + len(freed)] = freed
        self.num_free += len(freed)

    # -- read -----------------------------------------------------------------------------
    def read(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        out = self.other.read(slots) if self.other.spec else {}
        if self.frames is None:
            return out
        refs = self.refs[slots]
        for i, f in enumerate(self.frame_fields):
            out[f] = self.frames[refs[:, i * self.stack:(i + 1) * self.stack]]
        return out

    @property
    def nbytes(self) -> int:
        """Arrays plus an estimate of the fingerprint dictionaries (about 100 bytes an entry)."""
        if self.frames is None:
            return self.other.nbytes
        arrays = self.frames.nbytes + self.refs.nbytes + self.refcount.nbytes + self.free_stack.nbytes
        dicts = sys.getsizeof(self._recent) + sys.getsizeof(self._older)
        dicts += 64 * (len(self._recent) + len(self._older))  # the int objects behind each entry
        return arrays + dicts + self.other.nbytes

    # -- checkpoint -----------------------------------------------------------------------
    def state(self, slots: np.ndarray) -> dict[str, Any]:
        if self.frames is None:
            return {"frames": None}
        used = np.flatnonzero(self.refcount > 0)
        fps = lambda d: np.array(list(d), dtype=np.uint64).view(np.int64)  # noqa: E731
        return {
            "frames": {"shape": list(self.frames.shape[1:]), "dtype": self.frames.dtype.str, "stack": self.stack,
                       "positions": used, "data": self.frames[used]},
            "slots": np.array(slots, dtype=np.int64), "refs": self.refs[slots],
            "free_stack": self.free_stack[:self.num_free].copy(),
            "recent": {"fp": fps(self._recent), "pos": np.array(list(self._recent.values()), dtype=np.int64)},
            "older": {"fp": fps(self._older), "pos": np.array(list(self._older.values()), dtype=np.int64)},
            "other": self.other.state(slots),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        meta = state["frames"]
        if meta is None:
            self.frames = None
            return
        self._allocate(int(meta["stack"]), tuple(meta["shape"]), np.dtype(meta["dtype"]))
        assert self.frames is not None
        self.frames[meta["positions"]] = meta["data"]
        slots = np.asarray(state["slots"], dtype=np.int64)
        self.refs[slots] = state["refs"]
        np.add.at(self.refcount, self.refs[slots].ravel(), 1)
        free = np.asarray(state["free_stack"], dtype=np.int32)
        self.free_stack[:len(free)] = free
        self.num_free = len(free)
        unpack = lambda d: dict(zip(d["fp"].view(np.uint64).tolist(), d["pos"].tolist()))  # noqa: E731
        self._recent, self._older = unpack(state["recent"]), unpack(state["older"])
        self.other.load_state(state["other"])
