"""Replay throughput and Atari memory figures for shoal.data.

    python benchmarks/replay.py                    # 1M-capacity prioritized table, 100k Atari transitions
    python benchmarks/replay.py --capacity 4096    # tiny run (the Atari part then stores 4096 transitions)

Prints insert, sample and priority-update throughput of a prioritized table (batch 512),
the bytes one stored Atari transition costs in the frame-deduplicating storage, against
one 84x84 uint8 frame (7056 bytes), and for both tables the time and bytes to checkpoint
and restore them (``save_table`` / ``load_table``: safetensors + JSON with SHA-256, the
format run checkpoints use; temp files on the system's temp folder). Timings use
time.perf_counter.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.core.types import StepResult  # noqa: E402
from shoal.data import FrameStackStorage, ReplayTable, TransitionAdder, Uniform, load_table, save_table  # noqa: E402

FRAME_BYTES = 84 * 84
SAMPLE_UPDATE_TARGET_US = 2000.0
BYTES_TARGET = 1.2


def small_items(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """DQN-sized items: a 4-float observation, an action, reward, discount, next observation."""
    return {"obs": rng.random((n, 4), dtype=np.float32), "action": rng.integers(0, 2, n),
            "reward": rng.random(n, dtype=np.float32), "discount": np.full(n, 0.99, np.float32),
            "next_obs": rng.random((n, 4), dtype=np.float32)}


def mark(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def bench_prioritized(capacity: int, batch: int, calls: int) -> ReplayTable:
    rng = np.random.default_rng(0)
    table = ReplayTable.prioritized(capacity, alpha=0.6, seed=0)
    pool = [small_items(batch, rng) for _ in range(8)]
    n_inserts = max(1, (capacity + capacity // 10) // batch)  # fill, then keep going with evictions
    t0 = time.perf_counter()
    for i in range(n_inserts):
        table.insert(pool[i % len(pool)], priorities=rng.random(batch) + 0.01)
    insert_s = time.perf_counter() - t0
    priorities = [rng.random(batch) + 0.01 for _ in range(8)]

    for _ in range(10):  # warm-up
        _, keys, _ = table.sample(batch)
        table.update_priorities(keys, priorities[0])
    t0 = time.perf_counter()
    all_keys = [table.sample(batch)[1] for _ in range(calls)]
    sample_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, keys in enumerate(all_keys):
        table.update_priorities(keys, priorities[i % 8])
    update_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(calls):
        _, keys, _ = table.sample(batch)
        table.update_priorities(keys, priorities[i % 8])
    both_us = (time.perf_counter() - t0) / calls * 1e6

    print(f"prioritized table: capacity {capacity:,}, batch {batch}, "
          "item = obs f32[4], action i64, reward f32, discount f32, next_obs f32[4]")
    print(f"  insert             {n_inserts * batch / insert_s:>12,.0f} items/s  "
          f"({insert_s / n_inserts * 1e6:8.1f} us per call of {batch}, {n_inserts * batch:,} items incl. evictions)")
    for name, seconds in (("sample", sample_s), ("update_priorities", update_s)):
        print(f"  {name:<18} {calls * batch / seconds:>12,.0f} items/s  ({seconds / calls * 1e6:8.1f} us per call)")
    print(f"  sample + update    {both_us:8.1f} us per call of {batch}  "
          f"[target < {SAMPLE_UPDATE_TARGET_US:.0f} us: {mark(both_us < SAMPLE_UPDATE_TARGET_US)}]")
    return table


def bench_checkpoint(table: ReplayTable, fresh: Callable[[], ReplayTable], label: str) -> None:
    """Save ``table`` with the run's checkpoint format, restore it into ``fresh()``, and check they agree."""
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        t0 = time.perf_counter()
        save_table(table, Path(tmp) / "replay")
        save_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        back = fresh()
        t0 = time.perf_counter()
        load_table(back, Path(tmp) / "replay")
        load_s = time.perf_counter() - t0
    assert len(back) == len(table) and np.array_equal(back.index.slot_key, table.index.slot_key)
    print(f"  checkpoint {label}: {len(table):,} items, {size / 1e6:,.1f} MB on disk "
          f"({size / len(table):,.0f} bytes per item)")
    print(f"    save (write + SHA-256) {save_s:6.2f} s  ({size / 1e6 / save_s:7,.0f} MB/s)")
    print(f"    restore (read + verify + load) {load_s:6.2f} s  ({size / 1e6 / load_s:7,.0f} MB/s)")


def bench_atari(transitions: int, envs: int, chunk: int) -> ReplayTable:
    """Fill a frame-stack table with synthetic Atari episodes, through a transition adder."""
    rng = np.random.default_rng(1)
    table = ReplayTable(transitions, Uniform(seed=0), storage=FrameStackStorage(transitions))
    adder = TransitionAdder(gamma=0.99)

    def reset_stack() -> np.ndarray:
        return np.repeat(rng.integers(0, 256, (1, 84, 84), dtype=np.uint8), 4, axis=0)

    stacks = np.stack([reset_stack() for _ in range(envs)])
    left = rng.integers(100, 1001, envs)
    adder.add_first(stacks)
    steps = (transitions + transitions // 10) // envs + 1  # fill, then wrap around a little
    insert_s = 0.0
    for step in range(steps):
        frames = rng.integers(0, 256, (envs, 1, 84, 84), dtype=np.uint8)
        stacks = np.concatenate([stacks[:, 1:], frames], axis=1)
        left -= 1
        ended = left == 0
        final = stacks.copy()
        for i in np.flatnonzero(ended):
            stacks[i] = reset_stack()
            left[i] = rng.integers(100, 1001)
        truncated = ended & (rng.random(envs) < 0.5)
        adder.add(rng.integers(0, 18, envs),
                  StepResult(stacks.copy(), rng.random(envs).astype(np.float32), ended & ~truncated, truncated, final))
        if (step + 1) % chunk == 0 or step == steps - 1:
            items = adder.drain()
            if items is not None:
                t0 = time.perf_counter()
                table.insert(items)
                insert_s += time.perf_counter() - t0
    per = table.storage.nbytes / len(table)
    print(f"atari frame storage: {len(table):,} transitions stored of [4, 84, 84] uint8 obs + next_obs, "
          f"{envs} env copies, episodes of 100-1000 steps")
    print(f"  bytes per transition {per:10,.0f}  (= {per / FRAME_BYTES:.3f} x one 84x84 frame of {FRAME_BYTES} bytes) "
          f"[target < {BYTES_TARGET}: {mark(per / FRAME_BYTES < BYTES_TARGET)}]")
    print(f"  a plain storage      {2 * 4 * FRAME_BYTES + 16:10,} bytes per transition (8 frames)")
    print(f"  insert               {steps * envs / insert_s:10,.0f} transitions/s (batches of {chunk * envs})")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=1_000_000, help="prioritized table capacity")
    parser.add_argument("--batch", type=int, default=512, help="items per insert/sample/update call")
    parser.add_argument("--calls", type=int, default=200, help="timed sample/update calls")
    parser.add_argument("--atari-transitions", type=int, default=None,
                        help="transitions stored for the Atari memory figure (default: min(100000, capacity))")
    args = parser.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    print(f"shoal replay benchmark (numpy {np.__version__})")
    table = bench_prioritized(args.capacity, args.batch, args.calls)
    bench_checkpoint(table, lambda: ReplayTable.prioritized(args.capacity, alpha=0.6, seed=0), "prioritized table")
    del table
    atari = args.atari_transitions or min(100_000, args.capacity)
    table = bench_atari(atari, envs=8, chunk=64)
    bench_checkpoint(table, lambda: ReplayTable(atari, Uniform(seed=0), storage=FrameStackStorage(atari)),
                     "atari frame table")


if __name__ == "__main__":
    main()
