"""Shared by the benchmark scripts: run one trainer in a fresh process and time it whole."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any


def run_worker(script: str, which: str, args: list[str]) -> dict[str, Any]:
    """Run ``script --worker which ARGS`` in a new interpreter; its last stdout line is a JSON result.

    Adds ``process_s``: the whole process's wall-clock time, imports included.
    """
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, script, "--worker", which, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"{which} worker failed (exit {out.returncode})")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t0
    return result


def worker_args(args: Any, seed_flag: str, seed: int) -> list[str]:
    """The command line a worker gets from the benchmark's own arguments."""
    extra = ["--steps", str(args.steps), seed_flag, str(seed), "--threads", str(args.threads),
             "--eval-episodes", str(args.eval_episodes)]
    for o in args.shoal:
        extra += ["--shoal", o]
    return extra
