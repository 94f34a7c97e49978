"""The learning runs past the slow set's budget: more seeds and more backends of the slow tests.

The slow set (``python -m pytest -m slow``) is kept within 90 minutes on a 2-core machine: it
runs seed 0 of the multi-seed learning tests and one local backend plus Ray for each
asynchronous topology. The tests marked ``extended`` hold the rest, with the same thresholds:
two of three seeds for SAC, TD3, DDPG and both DQN variants on CartPole, seeds 1-4 of DQN on
MountainCar, the other seeds of KL-penalty PPO,
REINFORCE and one-step actor-critic, the threaded (or in-process) variants of A3C, GA3C,
GORILA, DPPO and SEED, APPO in-process, recurrent A2C, PPO under ``torch.compile``, GA3C on
a private Ray instance, and the uninterrupted Ray runs of local PPO, Ape-X, SEED, A3C, GORILA, DPPO
and AlphaZero (the slow set kills those -9 and resumes them at the same budgets and bars). This
script runs them and prints each test's outcome and duration, and the total; it exits non-zero
if any failed.

    python benchmarks/extended_learning.py            # all of them (a little over an hour here)
    python benchmarks/extended_learning.py -k pendulum  # a subset, pytest's -k expression
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default=None, help="only the tests matching this pytest -k expression")
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "pytest", "-m", "extended", "-q", "-rA", "--durations=0", "-s"]
    if args.k:
        cmd += ["-k", args.k]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    text = out.stdout + out.stderr
    durations = {m.group(2): float(m.group(1)) for m in re.finditer(r"^([\d.]+)s call\s+(\S+)$", text, re.M)}
    outcomes = re.findall(r"^(PASSED|FAILED|ERROR|SKIPPED)\s+(\S+)", text, re.M)
    if not outcomes:
        sys.stdout.write(text[-4000:])
        return out.returncode or 1
    print(f"{'outcome':<8} {'seconds':>8}  test")
    for outcome, test in outcomes:
        print(f"{outcome:<8} {durations.get(test, float('nan')):>8.1f}  {test}")
    print(f"{len(outcomes)} tests, {sum(o == 'PASSED' for o, _ in outcomes)} passed, {wall / 60:.1f} min in all")
    return out.returncode


if __name__ == "__main__":
    raise SystemExit(main())
