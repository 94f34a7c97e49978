"""The permissions of files shoal writes: what ``open()`` would give them (``0o666`` less the umask).

Atomic writes go through :func:`tempfile.mkstemp`, whose files are ``0600`` (private to
their owner); :func:`make_default_mode` gives such a file the mode a plain ``open()`` would
have, so run directories stay readable by whoever the umask lets read them.
"""

from __future__ import annotations

import functools
import os
import threading

_lock = threading.Lock()


@functools.cache
def process_umask() -> int:
    """The process's umask, read once (from ``/proc`` where there is one, so no other thread sees it changed)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _lock:  # os.umask only sets it: set it back at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """``0o666`` less the umask: the mode ``open(path, "w")`` gives a new file."""
    return 0o666 & ~process_umask()


def make_default_mode(fd_or_path: int | str | os.PathLike[str]) -> None:
    """Give a file (an open descriptor or a path) :func:`default_file_mode`."""
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, default_file_mode())
    else:
        os.chmod(fd_or_path, default_file_mode())
