"""Actor scaling of the asynchronous topologies on a slow simulator (issue 10).

    python benchmarks/scaling.py                                   # Ray, 1-16 actors, IMPALA, SEED, Ape-X, A2C
    python benchmarks/scaling.py --backend threaded --actors 1 16  # the threaded backend, two points
    python benchmarks/scaling.py --backend ray threaded --seconds 20
    python benchmarks/scaling.py --systems impala --actors 1 2 --seconds 10

The env is CartPole-v1 whose every step waits 2 ms (``shoal.envs.slow.slow_cartpole``):
an actor stepping its E env copies one after another waits 2 ms per step, so it cannot
exceed 1 / 0.002 = 500 steps/s whatever E is, and N actors cannot exceed 500 N steps/s
(the env's ideal). The figure per point is the env steps per second *consumed by the
learner* in steady state: ``learner_env_steps`` (IMPALA, SEED) or, where the learner
consumes every step the actors insert (Ape-X, whose replay node's rate limiter keeps the
algorithm's replay ratio; synchronous A2C), ``env_steps``, taken as the slope between the first metric row at least
``--warmup`` seconds after the learner consumed its first step and the last row, so
start-up (process spawn, imports, the first unrolls) is excluded.

Each point runs ``shoal.train`` in a fresh process with an unbounded step budget; this
script watches its ``metrics.csv`` and stops it (SIGINT) once ``--seconds`` of steady
state are logged. Efficiency is printed against linear (N times the same system's
1-actor figure, when measured) and against the env's ideal (500 N), next to the targets.

Ape-X is measured twice: ``apex`` at the shipped CartPole ratio (16 samples per inserted
item: at 16 actors that asks the learner for about 1,000 updates of 128 per second, which a
learner sharing 2 cores with the actors cannot give, so that row is the learner's bound), and
``apex_r1`` at 1 sample per item, where the topology rather than the learner is measured.

A second part runs IMPALA and synchronous A2C (its default rollout length, 5) on the
same env with exponential step times (mean 2 ms) at the largest actor count. Last, a
learner-only loop of the IMPALA learner on synthetic unrolls gives learner samples/s on
CPU and, when ``torch.cuda.is_available()``, on GPU.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DELAY_S = 0.002
IDEAL_PER_ACTOR = 1.0 / DELAY_S  # 500 steps/s: an actor steps its envs one after another
LINEAR_TARGETS = {"impala": 0.80, "seed": 0.50, "apex": 0.60}  # at 16 actors, fraction of linear
IDEAL_TARGETS = {"impala": 0.80, "seed": 0.50}  # at 16 actors, fraction of the env's ideal (6,400 and 4,000 steps/s)
TARGET_ACTORS = 16
RLLIB_REFERENCE = "RLlib 2.60 IMPALA on the same env: 16 env runners gave 2.7% of linear"
ALGO = {"impala": "impala", "seed": "impala", "apex": "apex_dqn", "apex_r1": "apex_dqn", "a2c": "a2c"}
COUNTER = {"impala": "learner_env_steps", "seed": "learner_env_steps", "apex": "env_steps", "apex_r1": "env_steps",
           "a2c": "env_steps"}
#: Ape-X at one sample per inserted item (the shipped CartPole ratio is 16, which binds the learner here first).
APEX_R1 = {"train_freq": 128, "gradient_steps": 1, "batch_size": 128}
UNBOUNDED_STEPS = 10**12


@dataclass
class Point:
    """One measured configuration."""

    system: str
    backend: str
    actors: int
    jitter: str
    steps_per_s: float | None
    window_s: float
    note: str = ""


def overrides_for(system: str, actors: int) -> dict[str, Any]:
    """The run's overrides: the algorithm's shipped CartPole-v1 defaults, no evaluation, no mid-run checkpoints."""
    from shoal.agents import registry

    algo = ALGO[system]
    out = {k: v for k, v in registry.get(algo).defaults("CartPole-v1").items() if k not in ("steps", "num_actors")}
    out.update(eval_episodes=0, checkpoint_every=UNBOUNDED_STEPS, log_every=64 * actors)
    if system == "seed":
        out["topology"] = "seed"
    if system == "apex_r1":
        out.update(APEX_R1)
    return out


def worker(spec: dict[str, Any]) -> None:
    """Child process: train until interrupted; the parent reads the run's metrics.csv."""
    import shoal
    from shoal.envs.slow import slow_cartpole

    env = functools.partial(slow_cartpole, delay_s=DELAY_S, jitter=spec["jitter"])
    try:
        shoal.train(ALGO[spec["system"]], env, steps=UNBOUNDED_STEPS, seed=0, run_dir=spec["run_dir"],
                    backend=spec["backend"], num_actors=spec["actors"], overrides=overrides_for(spec["system"], spec["actors"]),
                    quiet=True, tensorboard=False)
    except KeyboardInterrupt:
        pass


def read_rows(path: Path) -> list[dict[str, float]]:
    """The metric rows written so far (a partly written last line is skipped)."""
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            try:
                rows.append({k: float(v) for k, v in r.items() if k and v not in ("", None)})
            except ValueError:
                continue
    return [r for r in rows if "env_steps" in r and "wall_time_s" in r]


def steady_window(rows: list[dict[str, float]], counter: str, warmup_s: float) -> tuple[dict[str, float], dict[str, float]] | None:
    """First row ``warmup_s`` after the counter left zero, and the last row; None before there are two."""
    live = [r for r in rows if r.get(counter, 0.0) > 0]
    if not live:
        return None
    start_t = live[0]["wall_time_s"] + warmup_s
    after = [r for r in live if r["wall_time_s"] >= start_t]
    if len(after) < 2:
        return None
    return after[0], after[-1]


def slope(window: tuple[dict[str, float], dict[str, float]], counter: str) -> tuple[float, float]:
    """(steps/s, seconds) between the window's two rows."""
    a, b = window
    dt = b["wall_time_s"] - a["wall_time_s"]
    return ((b[counter] - a[counter]) / dt if dt > 0 else 0.0), dt


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def stop_child(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """SIGINT the training process (it closes its nodes and Ray); kill it and its descendants if it hangs."""
    family = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in family:  # anything the run started that outlived it
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def measure(system: str, backend: str, actors: int, jitter: str, seconds: float, warmup_s: float,
            startup_timeout_s: float, tmp: Path) -> Point:
    """Run one point in a fresh process and return its steady-state learner throughput."""
    run_dir = tmp / f"{system}-{backend}-{actors}-{jitter}"
    spec = {"system": system, "backend": backend, "actors": actors, "jitter": jitter, "run_dir": str(run_dir)}
    counter = COUNTER[system]
    log = (tmp / f"{run_dir.name}.log").open("w")
    proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], stdout=log, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    note = ""
    window = None
    try:
        while True:
            time.sleep(1.0)
            if proc.poll() is not None:
                note = f"run exited early (code {proc.returncode}); see {log.name}"
                break
            # Read while it runs: an interrupted run without a checkpoint removes its directory.
            window = steady_window(read_rows(run_dir / "metrics.csv"), counter, warmup_s) or window
            if window is not None and window[1]["wall_time_s"] - window[0]["wall_time_s"] >= seconds:
                break
            if time.monotonic() - t0 > startup_timeout_s + warmup_s + 2 * seconds:
                note = "timed out before a full window" + ("" if window else " (the learner consumed nothing)")
                break
    finally:
        stop_child(proc)
        log.close()
    if note.startswith("run exited early"):  # the log goes with the temporary directory: keep its last line
        tail = [ln for ln in Path(log.name).read_text(errors="replace").splitlines() if ln.strip()]
        note = f"run exited early (code {proc.returncode}): {tail[-1] if tail else 'no output'}"
    if window is None:
        return Point(system, backend, actors, jitter, None, 0.0, note or "no steady-state window")
    sps, dt = slope(window, counter)
    return Point(system, backend, actors, jitter, sps, dt, note)


def _fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def print_scaling(points: list[Point], backend: str) -> tuple[bool, int]:
    """The scaling table of one backend and the targets at 16 actors: (every checked target passed, targets checked)."""
    ok, checked = True, 0
    print(f"\n== scaling, backend={backend}: learner env steps/s on CartPole-v1 waiting a fixed {DELAY_S * 1e3:g} ms per step ==")
    print(f"{'system':<8}{'actors':>7}{'steps/s':>10}{'window s':>10}{'vs linear':>11}{'vs ideal':>10}  note")
    for system in dict.fromkeys(p.system for p in points):
        mine = [p for p in points if p.system == system and p.backend == backend and p.jitter == "fixed"]
        one = next((p.steps_per_s for p in mine if p.actors == 1), None)
        for p in mine:
            lin = p.steps_per_s / (one * p.actors) if p.steps_per_s is not None and one else None
            ideal = p.steps_per_s / (IDEAL_PER_ACTOR * p.actors) if p.steps_per_s is not None else None
            print(f"{system:<8}{p.actors:>7}{_fmt(p.steps_per_s):>10}{p.window_s:>10.1f}{_fmt(lin, '>10.1%'):>11}"
                  f"{_fmt(ideal, '>9.1%'):>10}  {p.note}")
        at = next((p for p in mine if p.actors == TARGET_ACTORS), None)
        if at is None:
            continue
        if system in LINEAR_TARGETS:
            t = LINEAR_TARGETS[system]
            lin = at.steps_per_s / (one * TARGET_ACTORS) if at.steps_per_s is not None and one else None
            verdict = "n/a (1 actor not measured)" if one is None else ("PASS" if lin is not None and lin >= t else "MISS")
            ok &= verdict != "MISS"
            checked += verdict != "n/a (1 actor not measured)"
            print(f"  target {system} at {TARGET_ACTORS} actors >= {t:.0%} of linear: {_fmt(lin, '.1%')}  {verdict}")
        if system in IDEAL_TARGETS:
            t = IDEAL_TARGETS[system] * IDEAL_PER_ACTOR * TARGET_ACTORS
            verdict = "PASS" if at.steps_per_s is not None and at.steps_per_s >= t else "MISS"
            ok &= verdict != "MISS"
            checked += 1
            print(f"  target {system} at {TARGET_ACTORS} actors >= {t:,.0f} steps/s "
                  f"({IDEAL_TARGETS[system]:.0%} of the env's ideal {IDEAL_PER_ACTOR * TARGET_ACTORS:,.0f}): "
                  f"{_fmt(at.steps_per_s)}  {verdict}")
    return ok, checked


def learner_samples_per_s(device: str, batch_unrolls: int = 16, seconds: float = 5.0) -> float:
    """IMPALA's learner alone on ``device``: samples/s of V-trace updates on ``batch_unrolls`` synthetic unrolls.

    The unrolls are real ``Rollout`` objects (32 steps x 8 envs, the CartPole defaults) made
    once by an actor on CartPole-v1 and fed again and again, so only the learner is timed.
    """
    from shoal.envs.make import env_spec
    from shoal.run.resolve import resolve
    from shoal.run.runner import _plain
    from shoal.topologies.nodes import ActorNode, NodeContext

    resolved = resolve("impala", "CartPole-v1", "CartPole-v1", None, {"device": device}, {"steps": 10**6}, None)
    ctx = NodeContext("impala", _plain(resolved.agent), "CartPole-v1", env_spec("CartPole-v1"), 10**6, 0, 1, device)
    actor_ctx = NodeContext("impala", _plain(resolved.agent), "CartPole-v1", env_spec("CartPole-v1"), 10**6, 0, 1, "cpu")
    actor = ActorNode(actor_ctx, 0, 1, 1, 2)
    builder = ctx.builder()
    rollouts = [actor.run(builder.steps_per_iteration)[1] for _ in range(batch_unrolls)]
    learner = builder.make_learner(builder.make_networks(), builder.make_tables())
    samples = sum(r.num_steps for r in rollouts)
    for _ in range(3):  # warm-up (allocations, CUDA kernels)
        learner.step(rollouts)
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        learner.step(rollouts)
        n += 1
    _sync(device)
    return n * samples / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", nargs="+", choices=["ray", "threaded"], default=["ray"])
    p.add_argument("--actors", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    p.add_argument("--seconds", type=float, default=25.0, help="steady-state seconds measured per point")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds skipped after the learner's first step")
    p.add_argument("--startup-timeout", type=float, default=180.0, help="longest wait for a run to start")
    p.add_argument("--systems", nargs="+", choices=list(ALGO), default=["impala", "seed", "apex", "apex_r1", "a2c"])
    p.add_argument("--no-learner-loop", action="store_true", help="skip the learner-only CPU/GPU loop")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(f"CartPole-v1 stepping with a {DELAY_S * 1e3:g} ms wait per step; env's ideal {IDEAL_PER_ACTOR:,.0f} steps/s per actor; "
          f"{args.seconds:g} s of steady state per point after {args.warmup:g} s of warm-up; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    all_ok, checked = True, 0
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="shoal-scaling-") as tmpdir:
        tmp = Path(tmpdir)
        for backend in args.backend:
            for system in [s for s in args.systems if s != "a2c"]:
                for n in args.actors:
                    pt = measure(system, backend, n, "fixed", args.seconds, args.warmup, args.startup_timeout, tmp)
                    points.append(pt)
                    print(f"  measured {system} {backend} {n} actors: {_fmt(pt.steps_per_s)} steps/s over {pt.window_s:.1f} s "
                          f"{pt.note}", flush=True)
            ok, n_checked = print_scaling(points, backend)
            all_ok, checked = all_ok and ok, checked + n_checked
            big = max(args.actors)
            pair = [s for s in ("impala", "a2c") if s in args.systems]
            if pair:
                print(f"\n== straggling env (exponential step time, mean {DELAY_S * 1e3:g} ms), backend={backend}, {big} actors ==")
                for system in pair:
                    pt = measure(system, backend, big, "exponential", args.seconds, args.warmup, args.startup_timeout, tmp)
                    points.append(pt)
                    label = "IMPALA (async)" if system == "impala" else "A2C (synchronous, rollout_length 5)"
                    print(f"  {label:<38}{_fmt(pt.steps_per_s):>8} steps/s over {pt.window_s:.1f} s "
                          f"({_fmt(pt.steps_per_s / (IDEAL_PER_ACTOR * big) if pt.steps_per_s else None, '.1%')} of ideal) "
                          f"{pt.note}", flush=True)
                got = {q.system: q.steps_per_s for q in points if q.backend == backend and q.jitter == "exponential"}
                imp, a2c = got.get("impala"), got.get("a2c")
                if imp and a2c:
                    print(f"  IMPALA / A2C: {imp / a2c:.2f}x")
    print(f"\nreference (quoted from the project's notes, not measured here): \"{RLLIB_REFERENCE}\"")
    if not args.no_learner_loop:
        import torch

        print("\n== IMPALA learner alone on synthetic unrolls (16 unrolls of 32 x 8 steps per update) ==")
        print(f"  cpu: {learner_samples_per_s('cpu'):,.0f} samples/s")
        if torch.cuda.is_available():
            print(f"  gpu ({torch.cuda.get_device_name(0)}): {learner_samples_per_s('cuda'):,.0f} samples/s")
        else:
            print("  gpu: no GPU present (torch.cuda.is_available() is False); not measured")
    if not checked:
        print(f"\nno target checked (the targets are at {TARGET_ACTORS} actors, with the 1-actor point for linear)")
    else:
        print(f"\n{checked} targets checked: " + ("all met" if all_ok else "some missed (MISS above)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
