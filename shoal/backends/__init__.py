"""Backends decide where nodes run: ``inprocess`` (default, no Ray) or ``ray``."""

from __future__ import annotations

from typing import Sequence

from shoal.backends.base import Backend, Future, NodeHandle
from shoal.errors import ConfigError

BACKENDS = ("inprocess", "threaded", "ray")


def make_backend(name: str, address: str | None = None, num_cpus: int | None = None,
                 py_modules: Sequence[str] = ()) -> Backend:
    """The backend called ``name``; only ``ray`` imports Ray (lazily).

    ``py_modules``: local files or package folders Ray workers must be able to import (e.g.
    the module of a ``module:EnvId`` env id); the in-process backend already can.
    """
    if name == "inprocess":
        from shoal.backends.inprocess import InProcessBackend

        if address:
            raise ConfigError("--ray-address only applies to --backend ray; drop it or pass --backend ray")
        return InProcessBackend()
    if name == "threaded":
        from shoal.backends.threaded import ThreadedBackend

        if address:
            raise ConfigError("--ray-address only applies to --backend ray; drop it or pass --backend ray")
        return ThreadedBackend()
    if name == "ray":
        if address and address != "auto":
            # Clusters started with `ray start` use token auth; a driver naming an explicit
            # address must opt in before Ray is imported (the token itself then comes from
            # RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or Ray's default token file).
            import os

            os.environ.setdefault("RAY_AUTH_MODE", "token")
        from shoal.backends.ray import RayBackend

        return RayBackend(address=address, num_cpus=num_cpus, py_modules=py_modules)
    raise ConfigError(f"unknown backend {name!r}; use one of {BACKENDS}")


__all__ = ["Backend", "Future", "NodeHandle", "make_backend", "BACKENDS"]
