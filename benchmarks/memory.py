"""Memory over a long IMPALA run on Ray: every node's RSS must stay flat (issue 10).

    python benchmarks/memory.py                      # 10 minutes, 4 actors, CartPole-v1
    python benchmarks/memory.py --minutes 3 --from-minute 1

The run (``shoal.train("impala", "CartPole-v1", backend="ray", num_actors=4)`` with an
unbounded step budget, a metric row every 10,000 env steps and a checkpoint every
100,000, as a long run would) goes in a fresh process, the driver. This script reads the
resident set size (``VmRSS`` in ``/proc/PID/status``) of that driver and of every process
it started, every ``--interval`` seconds: the Ray worker of each node (named from Ray's
process title ``ray::ClassName``, numbered in pid order when a class has several) and Ray's
own processes (raylet, GCS, dashboard and runtime-env agents; printed, not judged). The check
also fails unless the driver, the learner, queue and variable-server nodes and every actor
node were found. Per node it prints the RSS at
``--from-minute`` (the first sample from then on: start-up and the allocator's first
growth are over) and at the end, and the growth; a node passes when it grew by at most 5%
or at most 50 MiB, and the check passes when every node and the driver do.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling import descendants, init_ray_for, ray_cpus_needed, read_rows, stop_child  # noqa: E402

MIB = 1024 * 1024
NODE_CLASSES = ("ImpalaActorNode", "ImpalaLearnerNode", "QueueNode", "VariableServer")
MAX_GROWTH_FRAC = 0.05
MAX_GROWTH_BYTES = 50 * MIB


@dataclass
class NodeMemory:
    """The RSS samples of one process: ``(seconds since the run started, bytes)``."""

    name: str
    pid: int
    judged: bool
    samples: list[tuple[float, int]] = field(default_factory=list)

    def at(self, t: float) -> tuple[float, int] | None:
        """The first sample at or after ``t`` seconds."""
        return next((s for s in self.samples if s[0] >= t), None)

    def growth(self, from_s: float) -> tuple[int, int] | None:
        """(RSS at ``from_s``, RSS at the end), or None without both samples."""
        first = self.at(from_s)
        if first is None or not self.samples or self.samples[-1][0] <= first[0]:
            return None
        return first[1], self.samples[-1][1]

    def flat(self, from_s: float) -> bool | None:
        """True when the growth since ``from_s`` is within 5% or within 50 MiB; None when not measured."""
        g = self.growth(from_s)
        if g is None:
            return None
        grown = g[1] - g[0]
        return grown <= MAX_GROWTH_BYTES or grown <= MAX_GROWTH_FRAC * g[0]


@dataclass
class MemoryResult:
    """Every process's samples, the window and the verdict."""

    nodes: list[NodeMemory]
    from_s: float
    end_s: float
    env_steps: int
    passed: bool
    report: str


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` in bytes, None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def process_label(pid: int) -> tuple[str, bool] | None:
    """(name, judged) of a process the run started: a node's class for Ray workers, else Ray's program."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None
    if not argv:
        return None
    if argv[0].startswith("ray::"):
        title = (argv[0][5:].split() or [""])[0]
        if title in ("", "IDLE"):
            return None  # a pooled worker not (yet) hosting a node
        cls = title.split(".")[0]
        return cls, cls in NODE_CLASSES  # others (DashboardAgent, RuntimeEnvAgent) are Ray's own actors
    prog = Path(argv[0]).name
    if prog.startswith("python") and len(argv) > 1:
        script = next((Path(a).name for a in argv[1:] if a.endswith(".py")), "")
        prog = f"python {script}" if script else prog
    return f"ray: {prog}", False


def worker(spec: dict[str, Any]) -> None:
    """Child process: the driver of an IMPALA run on Ray, until interrupted."""
    import shoal

    if spec["ray_cpus"]:
        init_ray_for(spec["ray_cpus"])  # shoal's own Ray start leaves two IMPALA actors unscheduled (see init_ray_for)
    try:
        shoal.train("impala", "CartPole-v1", steps=10**12, seed=0, run_dir=spec["run_dir"], backend="ray",
                    num_actors=spec["actors"],
                    overrides={"eval_episodes": 0, "log_every": 10_000, "checkpoint_every": 100_000},
                    quiet=True, tensorboard=False)
    except KeyboardInterrupt:
        pass


def run_memory_check(minutes: float = 10.0, from_minute: float = 2.0, interval_s: float = 10.0, actors: int = 4,
                     progress: bool = True, startup_timeout_s: float = 240.0, ray_workaround: bool = True) -> MemoryResult:
    """Run IMPALA on Ray for ``minutes`` of training and compare every node's RSS at ``from_minute`` with the end.

    Minutes count from the run's first metric row (Ray and the nodes have started, training is under way).
    """
    if from_minute >= minutes:
        raise ValueError(f"from_minute ({from_minute}) must be before the end ({minutes} minutes); lower it or run longer")
    nodes: dict[int, NodeMemory] = {}
    env_steps = 0
    with tempfile.TemporaryDirectory(prefix="shoal-memory-") as tmp:
        run_dir = Path(tmp) / "run"
        log_path = Path(tmp) / "driver.log"
        spec = {"run_dir": str(run_dir), "actors": actors, "ray_cpus": ray_cpus_needed("impala", actors) if ray_workaround else 0}
        with log_path.open("w") as log:
            proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], stdout=log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        nodes[proc.pid] = NodeMemory("driver", proc.pid, True)
        origin: float | None = None  # when the first metric row appeared: training is under way
        try:
            next_t = 0.0
            while True:
                now = time.monotonic() - t0
                if origin is not None and now >= origin + minutes * 60:
                    break
                if origin is None and now > startup_timeout_s:
                    raise RuntimeError(f"the IMPALA run logged no metric row in {startup_timeout_s:g} s: "
                                       + log_path.read_text()[-2000:])
                if proc.poll() is not None:
                    raise RuntimeError(f"the IMPALA run exited early (code {proc.returncode}): "
                                       + log_path.read_text()[-2000:])
                for pid in [proc.pid, *descendants(proc.pid)]:
                    if pid not in nodes or not nodes[pid].judged:
                        # Ray starts a worker as default_worker.py; its title becomes ray::Class once it hosts a node.
                        label = process_label(pid)
                        if label is None:
                            continue
                        if pid in nodes:
                            nodes[pid].name, nodes[pid].judged = label
                        else:
                            nodes[pid] = NodeMemory(label[0], pid, label[1])
                    rss = rss_bytes(pid)
                    if rss is not None:
                        nodes[pid].samples.append((now, rss))
                rows = read_rows(run_dir / "metrics.csv")
                env_steps = int(rows[-1]["env_steps"]) if rows else env_steps
                if rows and origin is None:
                    origin = now
                if progress:
                    total = sum(n.samples[-1][1] for n in nodes.values() if n.samples and n.samples[-1][0] == now)
                    print(f"  t={now:5.0f} s  env_steps={env_steps:>9,}  processes={len(nodes):>2}  "
                          f"total RSS {total / MIB:,.0f} MiB", flush=True)
                next_t += interval_s
                time.sleep(max(0.0, next_t - (time.monotonic() - t0)))
            end_s = time.monotonic() - t0
            assert origin is not None
        finally:
            stop_child(proc)
    named = _name_nodes(list(nodes.values()))
    from_s = origin + from_minute * 60
    lines = [f"IMPALA on Ray, {actors} actors, CartPole-v1: training from t={origin:.0f} s (first metric row; start-up before it), "
             f"{env_steps:,} env steps in the {(end_s - origin) / 60:.1f} min after it; RSS sampled every {interval_s:g} s; "
             "minutes are counted from the first metric row",
             f"{'process':<28}{'pid':>8}{f'RSS @ {from_minute:g} min':>16}{'RSS @ end':>12}{'growth':>18}  verdict"]
    passed = True
    for n in named:
        g = n.growth(from_s)
        ok = n.flat(from_s)
        if n.judged:
            passed &= ok is True
        verdict = ("PASS" if ok else "MISS" if ok is not None else "not measured") if n.judged else "(Ray's own, not judged)"
        if g is None:
            lines.append(f"{n.name:<28}{n.pid:>8}{'-':>16}{'-':>12}{'-':>18}  {verdict}")
            continue
        grown = g[1] - g[0]
        lines.append(f"{n.name:<28}{n.pid:>8}{g[0] / MIB:>12,.1f} MiB{g[1] / MIB:>8,.1f} MiB"
                     f"{grown / MIB:>+10.1f} MiB {grown / g[0]:>+5.1%}  {verdict}")
    expected = {"driver": 1, "ImpalaLearnerNode": 1, "QueueNode": 1, "VariableServer": 1, "ImpalaActorNode": actors}
    found = {k: sum(1 for n in named if n.judged and n.name.split("#")[0] == k) for k in expected}
    if found != expected:
        passed = False
        lines.append(f"the run's nodes were not all found: expected {expected}, found {found}")
    ray_grown = [n.name for n in named if not n.judged and n.flat(from_s) is False]
    if ray_grown:
        lines.append(f"note: Ray's own processes grew beyond the bound (not judged): {', '.join(ray_grown)}")
    lines.append(f"bound: growth <= {MAX_GROWTH_FRAC:.0%} or <= {MAX_GROWTH_BYTES // MIB} MiB per node, "
                 f"from minute {from_minute:g} to the end: {'PASS' if passed else 'MISS'}")
    return MemoryResult(named, from_s, end_s, env_steps, passed, "\n".join(lines))


def _name_nodes(nodes: list[NodeMemory]) -> list[NodeMemory]:
    """Number the nodes of classes with several processes (in pid order); judged first."""
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n.name] = counts.get(n.name, 0) + 1
    seen: dict[str, int] = {}
    for n in sorted(nodes, key=lambda n: n.pid):
        if counts[n.name] > 1 and n.judged:
            seen[n.name] = seen.get(n.name, -1) + 1
            n.name = f"{n.name}#{seen[n.name]}"
    return sorted(nodes, key=lambda n: (not n.judged, n.name != "driver", n.name))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="length of the run")
    p.add_argument("--from-minute", type=float, default=2.0, help="where growth is measured from")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--actors", type=int, default=4)
    p.add_argument("--no-ray-workaround", action="store_true",
                   help="let shoal start Ray itself (its CPU count leaves 2 IMPALA actors unscheduled)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    result = run_memory_check(args.minutes, args.from_minute, args.interval, args.actors,
                              ray_workaround=not args.no_ray_workaround)
    print(result.report)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
