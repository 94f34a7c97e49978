"""Running independent jobs (seeds of an experiment, trials of a study) side by side.

``process``: one fresh Python process per job (spawned, so nothing of the caller's state
leaks in), at most ``max_parallel`` at a time. ``ray``: one Ray task per job, through
:func:`shoal.backends.ray.run_tasks`, on this machine or a cluster.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Sequence

from shoal.errors import ConfigError, ShoalError

JOB_BACKENDS = ("process", "ray")


def default_parallel() -> int:
    """How many jobs run at once by default: one per core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))  # the cores this process may use (containers, taskset)
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_jobs(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], backend: str = "process",
             max_parallel: int | None = None, ray_address: str | None = None) -> Iterator[tuple[int, Any, BaseException | None]]:
    """Run ``fn(*args)`` for every ``args`` in ``calls``; yield ``(index, result, error)`` as each ends.

    A job that raises yields its exception and the others go on. ``fn`` must be a module-level
    function (it is imported by name in the worker).
    """
    limit = max(1, min(max_parallel or default_parallel(), len(calls) or 1))
    if backend == "ray":
        from shoal.backends.ray import run_tasks

        yield from run_tasks(fn, calls, max_parallel=limit, address=ray_address or None,
                             cluster_cpus=None if ray_address else limit)
        return
    if backend != "process":
        raise ConfigError(f"jobs run on process or ray, got {backend!r}; pass --backend ray or leave it out")
    if ray_address:
        raise ConfigError("--ray-address only applies with --backend ray; drop it or pass --backend ray")
    # max_tasks_per_child=1: every job gets a fresh process (torch and env state never carry over).
    pool = ProcessPoolExecutor(max_workers=limit, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1)
    futures: dict[Future[Any], int] = {}
    try:
        for i, args in enumerate(calls):
            futures[pool.submit(fn, *args)] = i
        todo = set(futures)
        while todo:
            done, todo = wait(todo, return_when=FIRST_COMPLETED)
            for f in sorted(done, key=futures.__getitem__):
                err = f.exception()
                if isinstance(err, BrokenProcessPool):
                    err = ShoalError("the job's process died (killed, or out of memory)")
                yield futures[f], None if err else f.result(), err
    finally:
        for f in futures:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
