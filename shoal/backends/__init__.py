"""Backends decide where nodes run: ``inprocess`` (default, no Ray) or ``ray``."""

from __future__ import annotations

from shoal.backends.base import Backend, Future, NodeHandle
from shoal.errors import ConfigError

BACKENDS = ("inprocess", "ray")


def make_backend(name: str, address: str | None = None, num_cpus: int | None = None) -> Backend:
    """The backend called ``name``; only ``ray`` imports Ray (lazily)."""
    if name == "inprocess":
        from shoal.backends.inprocess import InProcessBackend

        if address:
            raise ConfigError("--ray-address only applies to --backend ray; drop it or pass --backend ray")
        return InProcessBackend()
    if name == "ray":
        if address and address != "auto":
            # Clusters started with `ray start` use token auth; a driver naming an explicit
            # address must opt in before Ray is imported (the token itself then comes from
            # RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or Ray's default token file).
            import os

            os.environ.setdefault("RAY_AUTH_MODE", "token")
        from shoal.backends.ray import RayBackend

        return RayBackend(address=address, num_cpus=num_cpus)
    raise ConfigError(f"unknown backend {name!r}; use one of {BACKENDS}")


__all__ = ["Backend", "Future", "NodeHandle", "make_backend", "BACKENDS"]
