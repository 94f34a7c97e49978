"""Running independent jobs (seeds of an experiment, trials of a study) side by side.

``process``: one fresh Python process per job (spawned, so nothing of the caller's state
leaks in), at most ``max_parallel`` alive at a time, each sending its result back over its own
pipe; a process that dies (killed, out of memory, ``os._exit``) fails only its own job.
``ray``: one Ray task per job, through :func:`shoal.backends.ray.run_tasks`, on this machine
or a cluster.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator, Sequence

from shoal.errors import ConfigError, ShoalError

JOB_BACKENDS = ("process", "ray")
_JOIN_TIMEOUT_S = 10.0


def default_parallel() -> int:
    """How many jobs run at once by default: one per core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))  # the cores this process may use (containers, taskset)
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_jobs(backend: str, max_parallel: int | None, ray_address: str | None) -> None:
    """Refuse a job backend, ``--parallel`` or ``--ray-address`` that cannot apply (before anything is written)."""
    if backend not in JOB_BACKENDS:
        raise ConfigError(f"jobs run on process or ray, got {backend!r}; pass --backend ray or leave it out")
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError(f"--parallel must be >= 1, got {max_parallel}")
    if ray_address and backend != "ray":
        raise ConfigError("--ray-address only applies with --backend ray; drop it or pass --backend ray")


def gpus_per_job(device: str, parallel: int) -> float:
    """The GPU share each Ray job requests: ``parallel`` jobs share one GPU when they train on CUDA.

    A job requesting no GPU sees none on Ray, so ``device=auto`` jobs train on the CPU there.
    """
    return 1.0 / max(1, parallel) if device.startswith("cuda") else 0.0


def _child(fn: Callable[..., Any], args: tuple[Any, ...], conn: Connection) -> None:
    """A job's process: run it and send ``("ok", result)`` or ``("err", exception)`` back."""
    try:
        out: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent as the job's error
        out = ("err", e)
    try:
        conn.send(out)
    except (pickle.PicklingError, TypeError, AttributeError) as e:  # an unpicklable result or exception
        text = str(out[1]).strip().splitlines()[0] if out[0] == "err" and str(out[1]).strip() else str(e)
        conn.send(("err", ShoalError(f"{type(out[1]).__name__ if out[0] == 'err' else 'the result'}: {text}")))
    finally:
        conn.close()


def run_jobs(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], backend: str = "process",
             max_parallel: int | None = None, ray_address: str | None = None,
             device: str = "cpu") -> Iterator[tuple[int, Any, BaseException | None]]:
    """Run ``fn(*args)`` for every ``args`` in ``calls``; yield ``(index, result, error)`` as each ends.

    A job that raises, or whose process dies, yields its error and the others go on. ``fn``
    must be a module-level function (it is imported by name in the worker). ``device`` is the
    jobs' learner device: on Ray, CUDA jobs request a share of a GPU (:func:`gpus_per_job`).
    """
    check_jobs(backend, max_parallel, ray_address)
    limit = max(1, min(max_parallel or default_parallel(), len(calls) or 1))
    if backend == "ray":
        from shoal.backends.ray import run_tasks

        yield from run_tasks(fn, calls, max_parallel=limit, address=ray_address or None,
                             cluster_cpus=None if ray_address else limit, num_gpus=gpus_per_job(device, limit))
        return
    ctx = multiprocessing.get_context("spawn")
    queued = list(enumerate(calls))
    alive: dict[Connection, tuple[int, Any]] = {}  # the parent's end of each job's pipe -> (index, process)
    try:
        while queued or alive:
            while queued and len(alive) < limit:
                i, args = queued.pop(0)
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(fn, tuple(args), child), daemon=False)
                proc.start()
                child.close()  # only the job holds the sending end: its death reads as end-of-file here
                alive[parent] = (i, proc)
            for conn in wait(list(alive)):
                assert isinstance(conn, Connection)
                i, proc = alive.pop(conn)
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError):  # the process ended without sending: it died
                    kind, value = "dead", None
                finally:
                    conn.close()
                proc.join(_JOIN_TIMEOUT_S)
                if kind == "dead":
                    code = proc.exitcode
                    how = f"exit code {code}" if code is not None and code >= 0 else f"signal {-code}" if code else "unknown"
                    yield i, None, ShoalError(f"the job's process died ({how}: killed, out of memory, or exited)")
                elif kind == "err":
                    yield i, None, value
                else:
                    yield i, value, None
    finally:
        for conn, (_, proc) in alive.items():  # closed early (an error, Ctrl-C): end the jobs still running
            proc.terminate()
            conn.close()
        for _, proc in alive.values():
            proc.join(_JOIN_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                proc.join(_JOIN_TIMEOUT_S)
