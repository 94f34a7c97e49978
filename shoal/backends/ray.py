"""The Ray backend: each node is a Ray actor, on this machine or a cluster.

The only module in shoal that imports Ray. With no address it starts a private
local Ray instance (dashboard off) and stops it on shutdown; with an address it
connects to an existing cluster using the cluster's token authentication.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import ray

from shoal.backends.base import Backend, Future, NodeHandle
from shoal.errors import ConfigError, ShoalError


class RayFuture(Future):
    """Wraps a Ray ObjectRef."""

    __slots__ = ("ref",)

    def __init__(self, ref: "ray.ObjectRef") -> None:
        self.ref = ref

    def result(self) -> Any:
        return ray.get(self.ref)


def _unwrap(x: Any) -> Any:
    # Refs passed as top-level arguments are resolved by Ray inside the callee,
    # so data moves node to node without passing through the driver.
    return x.ref if isinstance(x, RayFuture) else x


class RayHandle(NodeHandle):
    """A Ray actor handle; picklable, so nodes can call each other."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def call(self, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> Any:
        fn = getattr(self.actor, method)
        if num_returns != 1:
            fn = fn.options(num_returns=num_returns)
        refs = fn.remote(*(_unwrap(a) for a in args), **{k: _unwrap(v) for k, v in kwargs.items()})
        if num_returns == 1:
            return RayFuture(refs)
        return tuple(RayFuture(r) for r in refs)


def _auth_hint(address: str) -> str:
    return (f"could not connect to the Ray cluster at {address!r}: it requires its auth token; "
            "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token, "
            "or run on the head node with --ray-address auto")


def _with_object_store(cls: type[Any]) -> type[Any]:
    """``cls`` whose instances first install Ray's object store as the process's :mod:`shoal.core.store`."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        from shoal.core import store

        store.install(ray.put, ray.get, "ray")
        cls.__init__(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__qualname__": cls.__qualname__,
                                       "__module__": cls.__module__, "__doc__": cls.__doc__})


class RayBackend(Backend):
    """Places each node in its own Ray actor process."""

    name = "ray"
    concurrent = True

    def __init__(self, address: str | None = None, num_cpus: int | None = None, py_modules: Sequence[str] = ()) -> None:
        self.address = address
        self.owns_ray = False
        self.actors: list[Any] = []
        # Local code the nodes import (e.g. a ``module:EnvId`` env's module): Ray uploads it and
        # puts it on every worker's sys.path, on this machine or a cluster's. Ray takes uploads
        # only when the job starts; with a Ray the caller started, each node's process gets the
        # code's folder on PYTHONPATH instead (enough on this machine; on a cluster, pass
        # runtime_env={"py_modules": [...]} to your own ray.init).
        shipped = {"py_modules": list(py_modules)} if py_modules else {}
        self.node_runtime_env: dict[str, Any] | None = None
        if ray.is_initialized():
            if py_modules:
                dirs = [str(Path(p).parent) for p in py_modules]
                path = os.pathsep.join([*dirs, *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])
                self.node_runtime_env = {"env_vars": {"PYTHONPATH": path}}
            return
        if address:
            try:
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, runtime_env=shipped or None)
            except ConnectionError as e:
                if os.environ.get("RAY_AUTH_MODE") == "token":
                    raise ShoalError(f"could not connect to the Ray cluster at {address!r} ({e}); check the address printed by "
                                     "`ray start --head`, and that RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH holds the cluster's "
                                     "token") from None
                raise ShoalError(f"could not connect to the Ray cluster at {address!r} ({e}); check the address printed by "
                                 "`ray start --head`") from None
            except Exception as e:  # Ray raises several types for auth failures
                text = f"{type(e).__name__}: {e}"
                if "auth" in text.lower() or "token" in text.lower():
                    raise ShoalError(_auth_hint(address)) from None
                raise ShoalError(f"could not connect to the Ray cluster at {address!r} ({text.splitlines()[0]})") from None
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=False, object_store_memory=256 * 1024 * 1024,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}, **shipped})
            self.owns_ray = True

    def resolve_device(self, name: str) -> str:
        """``auto`` is ``cuda`` when the cluster has a GPU (whatever this driver has); ``cuda`` needs one there.

        A learner asking for a GPU the cluster lacks would wait unscheduled forever, so that is
        an error here. ``cuda:N`` is refused: Ray chooses the GPU and shows the learner only
        that one, as ``cuda``.
        """
        gpus = float(ray.cluster_resources().get("GPU", 0.0))
        if name == "auto":
            return "cuda" if gpus >= 1 else "cpu"
        if name.startswith("cuda"):
            if name != "cuda":
                raise ConfigError(f"device={name!r} names a GPU index, but on Ray the learner gets the GPU Ray assigns it; "
                                  "use device=cuda")
            if gpus < 1:
                raise ConfigError("device='cuda' but the Ray cluster has no GPU (cluster resources show GPU=0); "
                                  "use device=cpu or add a node with a GPU")
        return name

    def spawn(self, cls: type, *args: Any, name: str = "", num_cpus: float = 1, num_gpus: float = 0,
              concurrency: int = 1, **kwargs: Any) -> NodeHandle:
        options: dict[str, Any] = {}
        if concurrency > 1:
            options["max_concurrency"] = int(concurrency)  # a threaded actor: serves while a call blocks
        if self.node_runtime_env:
            options["runtime_env"] = self.node_runtime_env
        remote_cls: Any = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0, **options)(_with_object_store(cls))
        actor = remote_cls.remote(*(_unwrap(a) for a in args), **{k: _unwrap(v) for k, v in kwargs.items()})
        self.actors.append(actor)
        return RayHandle(actor)

    def get(self, futures: Future | Sequence[Future]) -> Any:
        if isinstance(futures, RayFuture):
            return ray.get(futures.ref)
        if isinstance(futures, Future):
            return futures.result()
        refs = [f.ref for f in futures if isinstance(f, RayFuture)]
        if len(refs) == len(futures):
            return ray.get(refs)
        return [f.result() for f in futures]

    def wait(self, futures: Sequence[Future], num_returns: int = 1, timeout: float | None = None) -> tuple[list[Future], list[Future]]:
        by_ref = {f.ref: f for f in futures}  # type: ignore[attr-defined]
        ready, rest = ray.wait(list(by_ref), num_returns=num_returns, timeout=timeout)
        return [by_ref[r] for r in ready], [by_ref[r] for r in rest]

    def put(self, value: Any) -> Future:
        return RayFuture(ray.put(value))

    def shutdown(self) -> None:
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:
                pass
        self.actors.clear()
        if self.owns_ray:
            ray.shutdown()
            self.owns_ray = False
