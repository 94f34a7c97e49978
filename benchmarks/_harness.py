"""Shared by the benchmark scripts: run one trainer in a fresh process, time it, and limit its threads.

Wall-clock times on a shared machine swing with other people's load; CPU times (all of a
process's threads, user + system) much less so. Every result carries both.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run_worker(script: str, which: str, args: list[str]) -> dict[str, Any]:
    """Run ``script --worker which ARGS`` in a new interpreter; its last stdout line is a JSON result.

    Adds ``process_s`` (the whole process's wall-clock time, imports included) and
    ``process_cpu_s`` (its CPU time, user + system).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, script, "--worker", which, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"{which} worker failed (exit {out.returncode})")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    result["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def limit_threads(n: int) -> None:
    """``n`` intra-op threads for torch and for numpy's BLAS in this process (the same on every side)."""
    import torch

    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")
    except ImportError:
        pass


class Timer:
    """Wall-clock and CPU time (this process, all threads) of a ``with`` block: ``wall_s``, ``cpu_s``."""

    def __enter__(self) -> "Timer":
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._w
        self.cpu_s = time.process_time() - self._c


def merge_results(paths: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The results of several ``--json`` files (e.g. seeds run as separate invocations), first run of a seed kept."""
    merged: dict[str, dict[int, dict[str, Any]]] = {"shoal": {}, "sb3": {}}
    for p in paths:
        for which, rs in json.loads(Path(p).read_text()).items():
            for r in rs:
                merged[which].setdefault(int(r["seed"]), r)
    seeds = sorted(set(merged["shoal"]) & set(merged["sb3"]))
    print(f"merged {len(paths)} result file(s): seeds with both sides: {seeds}")
    for seed in seeds:
        s, b = merged["shoal"][seed], merged["sb3"][seed]
        print(f"seed {seed} shoal: time {s['train_s']:.1f} s, cpu {s['cpu_s']:.1f} s, eval {s['eval_mean']:.1f} | "
              f"SB3: time {b['train_s']:.1f} s, cpu {b['cpu_s']:.1f} s, eval {b['eval_mean']:.1f} | ratio time "
              f"{s['train_s'] / b['train_s']:.3f}x, cpu {s['cpu_s'] / b['cpu_s']:.3f}x"
              + (f" | env steps {s['steps']} / {b['steps']}" if "solved" in s else ""))
    return {w: [merged[w][k] for k in seeds] for w in merged}
