"""Env ids in Gymnasium's ``module:EnvId`` form: the module registers ``EnvId`` when imported.

``shoal train ppo --env mypkg.envs:MyEnv-v0`` works like ``gym.make("mypkg.envs:MyEnv-v0")``:
every process that makes the env (the driver, in-process nodes, Ray workers, ``shoal eval``)
imports ``mypkg.envs`` first. :func:`env_module_source` tells a backend which local code to
ship so that workers on other processes or machines can import it too.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import sysconfig
from pathlib import Path

from shoal.errors import EnvError


def split_env_id(env_id: str) -> tuple[str | None, str]:
    """``("mypkg.envs", "MyEnv-v0")`` for ``"mypkg.envs:MyEnv-v0"``; ``(None, env_id)`` for a plain id."""
    module, sep, bare = env_id.partition(":")
    return (module.strip(), bare.strip()) if sep else (None, env_id)


def bare_env_id(env_id: str) -> str:
    """The registered id without its ``module:`` prefix (for per-env defaults, run names, batched twins)."""
    return split_env_id(env_id)[1]


def import_env_module(env_id: str) -> str:
    """Import the module named by a ``module:EnvId`` id (which registers ``EnvId``) and return ``EnvId``.

    Plain ids are returned as they are. Importing is idempotent (Python caches modules).
    """
    module, bare = split_env_id(env_id)
    if module is None:
        return env_id
    if not module or not bare:
        raise EnvError(f"env id {env_id!r} is not of the form module:EnvId; write it like mypkg.envs:MyEnv-v0")
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise EnvError(f"env id {env_id!r} names module {module!r}, which cannot be imported in this process ({e}); "
                       "install it, or add its folder to PYTHONPATH") from None
    return bare


def _installed(path: Path) -> bool:
    """Whether ``path`` lies in an installed-packages or standard-library folder."""
    roots = {sysconfig.get_path(k) for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    roots |= {p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))}
    return any(r and path.is_relative_to(Path(r).resolve()) for r in roots)


def env_module_source(env_id: str) -> str | None:
    """The local file or package folder that must travel to remote workers for ``env_id``, or None.

    None for plain ids and for modules installed in site-packages (those must be installed on
    every node, like shoal itself). Otherwise the top-level package (or single-file module)
    that ``module:`` names, so that a worker can import it wherever it runs.
    """
    module = split_env_id(env_id)[0]
    if not module:
        return None
    top = module.split(".", 1)[0]
    if top == "shoal":
        return None  # shoal is on every node already
    spec = importlib.util.find_spec(top)
    if spec is None:
        raise EnvError(f"env id {env_id!r} names module {module!r}, which cannot be found in this process; "
                       "install it, or add its folder to PYTHONPATH")
    if spec.submodule_search_locations:  # a package: ship its folder
        locations = list(spec.submodule_search_locations)
        if len(locations) != 1:
            return None  # a namespace package spread over folders: it has to be installed on the nodes
        path = Path(locations[0]).resolve()
    elif spec.origin and spec.origin.endswith(".py"):
        path = Path(spec.origin).resolve()
    else:
        return None  # built-in or compiled: only installing it on the nodes works
    return None if _installed(path) else str(path)
