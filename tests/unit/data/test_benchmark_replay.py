"""The replay benchmark runs end to end at a tiny size and prints its figures."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_replay_benchmark_runs_tiny():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "replay.py"), "--capacity", "2048",
                          "--calls", "5", "--atari-transitions", "1024"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    for figure in ("insert", "sample + update", "bytes per transition", "us per call of 512",
                   "checkpoint prioritized table: 2,048 items", "checkpoint atari frame table: 1,024 items",
                   "save (write + SHA-256)", "restore (read + verify + load)"):
        assert figure in out, out
