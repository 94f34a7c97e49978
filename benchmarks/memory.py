"""Memory over a long run on Ray: every node's RSS must stay flat (IMPALA, Ape-X DQN, GORILA).

    python benchmarks/memory.py                                  # IMPALA, 10 minutes, 4 actors, CartPole-v1
    python benchmarks/memory.py --minutes 3 --from-minute 1
    python benchmarks/memory.py --algo apex_dqn gorila --minutes 20   # one run after the other

Each run (``shoal.train(ALGO, "CartPole-v1", backend="ray", num_actors=N)`` with the
algorithm's shipped CartPole-v1 settings, an unbounded step budget, a metric row every
10,000 env steps and a checkpoint every 100,000, as a long run would) goes in a fresh
process, the driver, which starts shoal's private Ray instance. This script reads the
resident set size (``VmRSS`` in ``/proc/PID/status``) of that driver and of every process
it started, every ``--interval`` seconds: the Ray worker of each node (named from Ray's
process title ``ray::ClassName``, numbered in pid order when a class has several) and Ray's
own processes (raylet, GCS, dashboard and runtime-env agents; printed, not judged). The check
also fails unless the driver and every node of the algorithm's topology were found
(IMPALA: learner, queue, variable server and N actors; Ape-X: learner, replay, variable
server and N actors; GORILA: N actor-learner bundles and the parameter shards). Per node it
prints the RSS at ``--from-minute`` (the first sample from then on: start-up, the
allocator's first growth and, for the replay algorithms, the filling of the replay are
over) and at the end, and the growth; a node passes when it grew by at most 5% or at most
50 MiB, and the check passes when every node and the driver do. The column "of it shared"
is the part of the growth in pages shared with other processes (``RssShmem``: mostly Ray's
object store, mapped into every process that reads or writes objects), the rest being the
process's own memory.
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
from scaling import descendants, read_rows, stop_child  # noqa: E402

MIB = 1024 * 1024
ALGOS = ("impala", "apex_dqn", "gorila")
NAMES = {"impala": "IMPALA", "apex_dqn": "Ape-X DQN", "gorila": "GORILA"}
DEFAULT_ACTORS = {"impala": 4, "apex_dqn": 4, "gorila": 2}
MAX_GROWTH_FRAC = 0.05
MAX_GROWTH_BYTES = 50 * MIB


@dataclass
class NodeMemory:
    """The RSS samples of one process: ``(seconds since the run started, bytes)``."""

    name: str
    pid: int
    judged: bool
    samples: list[tuple[float, int]] = field(default_factory=list)
    shared: list[int] = field(default_factory=list)
    """Of each sample, the resident pages shared with other processes (``RssShmem``: Ray's object store mapped in)."""

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
    got = rss_parts(pid)
    return got[0] if got else None


def rss_parts(pid: int) -> tuple[int, int] | None:
    """(resident set size, of it the shared-memory pages ``RssShmem``) of ``pid`` in bytes; None once it has exited."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in ("VmRSS", "RssShmem"):
                    found[key] = int(line.split()[1]) * 1024
    except OSError:
        return None
    return (found["VmRSS"], found.get("RssShmem", 0)) if "VmRSS" in found else None


def expected_nodes(algo: str, actors: int, overrides: dict[str, Any] | None = None) -> dict[str, int]:
    """How many processes of each node class (and the driver) a run of ``algo`` with ``actors`` actors has."""
    if algo == "impala":
        return {"driver": 1, "ImpalaLearnerNode": 1, "QueueNode": 1, "VariableServer": 1, "ImpalaActorNode": actors}
    if algo == "apex_dqn":
        return {"driver": 1, "ApexLearnerNode": 1, "ReplayNode": 1, "VariableServer": 1, "ApexActorNode": actors}
    if algo == "gorila":
        from shoal.topologies.gorila import GorilaSettings

        s = GorilaSettings(**{k: v for k, v in (overrides or {}).items() if k in GorilaSettings.__dataclass_fields__})
        return {"driver": 1, "GorilaLearnerNode": actors, "GorilaActorNode": actors, "ParameterShard": s.num_shards,
                **({"ReplayNode": 1} if s.replay == "global" else {})}
    raise ValueError(f"no memory check for {algo!r}; use one of {', '.join(ALGOS)}")


def process_label(pid: int, node_classes: tuple[str, ...]) -> tuple[str, bool] | None:
    """(name, judged) of a process the run started: a node's class for Ray workers (judged when it is one of
    ``node_classes``), else Ray's program."""
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
        return cls, cls in node_classes  # others (DashboardAgent, RuntimeEnvAgent) are Ray's own actors
    prog = Path(argv[0]).name
    if prog.startswith("python") and len(argv) > 1:
        script = next((Path(a).name for a in argv[1:] if a.endswith(".py")), "")
        prog = f"python {script}" if script else prog
    return f"ray: {prog}", False


def worker(spec: dict[str, Any]) -> None:
    """Child process: the driver of a run on Ray (shoal's private instance), until interrupted."""
    import shoal

    try:
        shoal.train(spec["algo"], "CartPole-v1", steps=10**12, seed=0, run_dir=spec["run_dir"], backend="ray",
                    num_actors=spec["actors"],
                    overrides={"eval_episodes": 0, "log_every": 10_000, "checkpoint_every": 100_000, **spec["overrides"]},
                    quiet=True, tensorboard=False)
    except KeyboardInterrupt:
        pass


def run_memory_check(minutes: float = 10.0, from_minute: float = 2.0, interval_s: float = 10.0, actors: int = 4,
                     progress: bool = True, startup_timeout_s: float = 240.0, algo: str = "impala",
                     overrides: dict[str, Any] | None = None) -> MemoryResult:
    """Run ``algo`` on Ray for ``minutes`` of training and compare every node's RSS at ``from_minute`` with the end.

    Minutes count from the run's first metric row (Ray and the nodes have started, training is under way).
    ``overrides``: settings on top of the algorithm's shipped CartPole-v1 ones.
    """
    if from_minute >= minutes:
        raise ValueError(f"from_minute ({from_minute}) must be before the end ({minutes} minutes); lower it or run longer")
    expected = expected_nodes(algo, actors, overrides)
    node_classes = tuple(k for k in expected if k != "driver")
    nodes: dict[int, NodeMemory] = {}
    env_steps = 0
    with tempfile.TemporaryDirectory(prefix="shoal-memory-") as tmp:
        run_dir = Path(tmp) / "run"
        log_path = Path(tmp) / "driver.log"
        spec = {"run_dir": str(run_dir), "actors": actors, "algo": algo, "overrides": dict(overrides or {})}
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
                    raise RuntimeError(f"the {NAMES[algo]} run logged no metric row in {startup_timeout_s:g} s: "
                                       + log_path.read_text()[-2000:])
                if proc.poll() is not None:
                    raise RuntimeError(f"the {NAMES[algo]} run exited early (code {proc.returncode}): "
                                       + log_path.read_text()[-2000:])
                for pid in [proc.pid, *descendants(proc.pid)]:
                    if pid not in nodes or not nodes[pid].judged:
                        # Ray starts a worker as default_worker.py; its title becomes ray::Class once it hosts a node.
                        label = process_label(pid, node_classes)
                        if label is None:
                            continue
                        if pid in nodes:
                            nodes[pid].name, nodes[pid].judged = label
                        else:
                            nodes[pid] = NodeMemory(label[0], pid, label[1])
                    parts = rss_parts(pid)
                    if parts is not None:
                        nodes[pid].samples.append((now, parts[0]))
                        nodes[pid].shared.append(parts[1])
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
    extra = f" ({', '.join(f'{k}={v}' for k, v in overrides.items())})" if overrides else ""
    lines = [f"{NAMES[algo]} on Ray, {actors} actors, CartPole-v1{extra}: "
             f"training from t={origin:.0f} s (first metric row; start-up before it), "
             f"{env_steps:,} env steps in the {(end_s - origin) / 60:.1f} min after it; RSS sampled every {interval_s:g} s; "
             "minutes are counted from the first metric row",
             f"{'process':<28}{'pid':>8}{f'RSS @ {from_minute:g} min':>16}{'RSS @ end':>12}{'growth':>18}"
             f"{'of it shared':>14}  verdict"]
    passed = True
    for n in named:
        g = n.growth(from_s)
        ok = n.flat(from_s)
        if n.judged:
            passed &= ok is True
        verdict = ("PASS" if ok else "MISS" if ok is not None else "not measured") if n.judged else "(Ray's own, not judged)"
        if g is None:
            lines.append(f"{n.name:<28}{n.pid:>8}{'-':>16}{'-':>12}{'-':>18}{'-':>14}  {verdict}")
            continue
        grown = g[1] - g[0]
        start = n.at(from_s)  # not None: growth() found it
        first = n.samples.index(start) if start is not None else 0
        shared = n.shared[-1] - n.shared[first] if len(n.shared) == len(n.samples) else 0
        lines.append(f"{n.name:<28}{n.pid:>8}{g[0] / MIB:>12,.1f} MiB{g[1] / MIB:>8,.1f} MiB"
                     f"{grown / MIB:>+10.1f} MiB {grown / g[0]:>+5.1%}{shared / MIB:>+10.1f} MiB  {verdict}")
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
    p.add_argument("--actors", type=int, help="actor nodes (GORILA: bundles); default: the algorithm's CartPole-v1 "
                   "setting (IMPALA 4, Ape-X 4, GORILA 2)")
    p.add_argument("--algo", nargs="+", choices=ALGOS, default=["impala"], help="algorithms, run one after another")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    passed = True
    for algo in args.algo:
        actors = args.actors or DEFAULT_ACTORS[algo]
        print(f"{NAMES[algo]}: {args.minutes:g} minutes of training, {actors} actors", flush=True)
        result = run_memory_check(args.minutes, args.from_minute, args.interval, actors, algo=algo)
        print(result.report, flush=True)
        passed &= result.passed
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
