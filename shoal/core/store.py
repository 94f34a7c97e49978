"""Where a node puts a large value that many other nodes read: once, not once per reader.

By default a value is its own reference (one process: nothing to share). In a Ray worker
process the Ray backend installs Ray's object store, so :func:`put` stores the value in
shared memory once and returns a small reference; any number of readers, in any process,
:func:`get` it from there (numpy buffers zero-copy on the same machine). The variable
server publishes every parameter snapshot this way.
"""

from __future__ import annotations

from typing import Any, Callable

_put: Callable[[Any], Any] = lambda value: value  # noqa: E731
_get: Callable[[Any], Any] = lambda ref: ref  # noqa: E731
_kind = "local"


def put(value: Any) -> Any:
    """Store ``value`` for many readers; returns a reference to pass around."""
    return _put(value)


def get(ref: Any) -> Any:
    """The value behind a reference made by :func:`put` (in any process of the program)."""
    return _get(ref)


def kind() -> str:
    """``local`` (values are their own references) or the installed store's name."""
    return _kind


def install(put_fn: Callable[[Any], Any], get_fn: Callable[[Any], Any], name: str) -> None:
    """Use another store in this process (called by a backend inside its worker processes)."""
    global _put, _get, _kind
    _put, _get, _kind = put_fn, get_fn, name
