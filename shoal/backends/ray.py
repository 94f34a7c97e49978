"""The Ray backend: each node is a Ray actor, on this machine or a cluster.

The only module in shoal that imports Ray. With no address it starts a private
local Ray instance (:func:`start_private_ray`: dashboard off, token authentication on
with a fresh token of its own) and stops it on shutdown; with an address it connects to
an existing cluster using the cluster's token authentication.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import ray

from shoal.backends.base import Backend, DataLost, Future, NodeDied, NodeHandle
from shoal.errors import ConfigError, ShoalError

_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
_process_token: str | None = None


def _private_token() -> str:
    """This process's token for the private instances it starts: random, made once, reused by each.

    Ray's driver keeps the first token it loads for the life of the process, so every private
    instance a process starts (one after another) must carry the same one.
    """
    global _process_token
    if _process_token is None:
        _process_token = secrets.token_hex(32)
    return _process_token


def _reset_ray_auth_cache() -> None:
    """Make Ray's driver read its authentication mode and token from the environment again."""
    try:
        raylet = importlib.import_module("ray._raylet")  # Ray's own (untyped) extension module
        raylet.Config.initialize("")
        raylet.AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # a Ray without token authentication: nothing cached
        pass


def start_private_ray(num_cpus: int | None = None, runtime_env: dict[str, Any] | None = None,
                      object_store_memory: int = 256 * 1024 * 1024) -> dict[str, str | None]:
    """Start a Ray instance on this machine for this process alone: no dashboard, token authentication on.

    Ray's GCS, raylet and worker ports listen on every interface of the machine, so the
    token is what keeps other clients out. The instance gets a random token of this process
    (in its environment, which Ray's own processes and the driver's other children inherit),
    not the shared ``~/.ray/auth_token``. ``address="local"``: never a cluster that
    ``RAY_ADDRESS`` or ``ray start`` points at. Setting ``RAY_AUTH_MODE=disabled`` turns
    authentication off, with a warning. Returns the authentication variables as they were
    before, for :func:`restore_auth_env` after ``ray.shutdown()``.
    """
    before = {k: os.environ.get(k) for k in _AUTH_VARS}
    disabled = os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled"
    if disabled:
        warnings.warn("RAY_AUTH_MODE=disabled: the private Ray instance accepts any client that can reach this "
                      "machine's Ray ports; unset RAY_AUTH_MODE to keep token authentication on", stacklevel=2)
    else:
        # RAY_AUTH_MODE stays as it is: unset, Ray (2.60 and later) turns token mode on for a new local
        # instance and refreshes its own configuration, which setting the variable here would skip.
        os.environ["RAY_AUTH_TOKEN"] = _private_token()
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        _reset_ray_auth_cache()
    env = {"env_vars": {"OMP_NUM_THREADS": "1"}}
    for key, value in (runtime_env or {}).items():
        env[key] = value
    try:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False, object_store_memory=object_store_memory,
                 runtime_env=env)
        if not disabled:
            raylet = importlib.import_module("ray._raylet")
            if raylet.get_authentication_mode() != raylet.AuthenticationMode.TOKEN:
                ray.shutdown()
                raise ShoalError(f"Ray {ray.__version__} started without token authentication; install ray>=2.60 "
                                 "(or set RAY_AUTH_MODE=token)")
    except BaseException:
        if ray.is_initialized():  # a half-started instance would be taken for the caller's own by the next backend
            ray.shutdown()
        restore_auth_env(before)
        raise
    return before


def restore_auth_env(before: dict[str, str | None]) -> None:
    """Put back the authentication variables :func:`start_private_ray` replaced, and have Ray read them again."""
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _reset_ray_auth_cache()


class RayFuture(Future):
    """Wraps a Ray ObjectRef (and the name of the node whose call it is, for errors)."""

    __slots__ = ("ref", "node")

    def __init__(self, ref: "ray.ObjectRef", node: str = "") -> None:
        self.ref = ref
        self.node = node

    def result(self) -> Any:
        return _get(self.ref, self.node)


def _get(refs: Any, node: str = "") -> Any:
    """``ray.get``, with the error of a call whose own node died as :class:`NodeDied` naming ``node``, and a value
    Ray lost with its machine as :class:`DataLost`.

    A call that failed because its node called a dead peer raises that peer's NodeDied (Ray
    re-raises a task's exception as an instance of its cause), which names the peer.
    """
    try:
        return ray.get(refs)
    except ray.exceptions.RayActorError as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        # Unavailable: the process died and Ray may be restarting it (calls made meanwhile fail too).
        raise NodeDied(text, node=node, transient=isinstance(e, ray.exceptions.ActorUnavailableError)) from e
    except ray.exceptions.ObjectLostError as e:  # its Ray node was lost with a value in its object store
        what = f"a call of node {node}" if node else "a node call"
        raise DataLost(f"{what} could not read a value Ray lost with the machine or process that held it "
                       f"({type(e).__name__}); resume the run from its last checkpoint with shoal train --resume",
                       node=node) from e


def _unwrap(x: Any) -> Any:
    # Refs passed as top-level arguments are resolved by Ray inside the callee,
    # so data moves node to node without passing through the driver.
    return x.ref if isinstance(x, RayFuture) else x


class RayHandle(NodeHandle):
    """A Ray actor handle; picklable, so nodes can call each other."""

    def __init__(self, actor: Any, name: str = "") -> None:
        self.actor = actor
        self.name = name

    def call(self, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> Any:
        fn = getattr(self.actor, method)
        if num_returns != 1:
            fn = fn.options(num_returns=num_returns)
        refs = fn.remote(*(_unwrap(a) for a in args), **{k: _unwrap(v) for k, v in kwargs.items()})
        if num_returns == 1:
            return RayFuture(refs, self.name)
        return tuple(RayFuture(r, self.name) for r in refs)

    def kill(self) -> None:
        """End the actor at once (its pending calls fail with NodeDied)."""
        ray.kill(self.actor, no_restart=True)


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
        on_restart = getattr(self, "on_restart", None)
        if callable(on_restart) and ray.get_runtime_context().was_current_actor_reconstructed:
            on_restart()

    return type(cls.__name__, (cls,), {"__init__": __init__, "__qualname__": cls.__qualname__,
                                       "__module__": cls.__module__, "__doc__": cls.__doc__})


#: The label Ray gives every node: its node id (a placement group's bundles select nodes by labels).
_NODE_ID_LABEL = "ray.io/node-id"

#: Environment variable naming a custom resource: actor nodes go, while it is alive, to the Ray node that has it.
ACTOR_RESOURCE_VAR = "SHOAL_RAY_ACTOR_RESOURCE"


class RayBackend(Backend):
    """Places each node in its own Ray actor process.

    ``actor_resource`` (default: the ``SHOAL_RAY_ACTOR_RESOURCE`` environment variable) names a
    custom resource of one Ray node (``ray start --resources '{"NAME": 1}'``): the restartable
    nodes (the actors) are placed on that node with a soft node affinity, so they land elsewhere
    when it is full, and when it is lost a restarted actor comes back on a surviving node. The
    other nodes (learners, queues, replay, servers), which are not restarted, then go to the
    driver's node (a hard affinity: Ray places an actor that asks for no resources on a random
    node unless its affinity is hard), and so do the ranks of a learner group (:meth:`spawn_group`),
    so losing the actors' node loses only actors.
    """

    name = "ray"
    concurrent = True

    def __init__(self, address: str | None = None, num_cpus: int | None = None, py_modules: Sequence[str] = (),
                 actor_resource: str | None = None) -> None:
        self.address = address
        self.actor_resource = actor_resource if actor_resource is not None else os.environ.get(ACTOR_RESOURCE_VAR, "")
        self.owns_ray = False
        self._auth_before: dict[str, str | None] = {}
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
            self._auth_before = start_private_ray(num_cpus, shipped)
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
              concurrency: int = 1, max_restarts: int = 0, actor: bool = False, **kwargs: Any) -> NodeHandle:
        """A Ray actor for the node; ``max_restarts``: Ray starts it anew that often after its process
        died (calls in flight then fail with :class:`NodeDied`; calls made later wait for the new one)."""
        options: dict[str, Any] = {}
        if concurrency > 1:
            options["max_concurrency"] = int(concurrency)  # a threaded actor: serves while a call blocks
        if self.node_runtime_env:
            options["runtime_env"] = self.node_runtime_env
        if self.actor_resource:
            options["scheduling_strategy"] = self._affinity(actor=actor, num_gpus=num_gpus)
        remote_cls: Any = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts, **options)(_with_object_store(cls))
        handle = remote_cls.remote(*(_unwrap(a) for a in args), **{k: _unwrap(v) for k, v in kwargs.items()})
        self.actors.append(handle)
        return RayHandle(handle, name or cls.__name__)

    def _affinity(self, actor: bool, num_gpus: float = 0) -> Any:
        """An actor's soft affinity to the live Ray node that has the resource ``actor_resource``; any other
        node's affinity to the driver's node: hard, unless it asks for ``num_gpus`` GPUs that node lacks (a
        learner on a GPU-less head), then soft, so it goes to a node with the GPUs instead of waiting forever."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if not actor:
            here = ray.get_runtime_context().get_node_id()
            gpus = sum(float(n.get("Resources", {}).get("GPU", 0.0)) for n in ray.nodes() if n.get("NodeID") == here)
            return NodeAffinitySchedulingStrategy(here, soft=num_gpus > gpus)
        holders = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and self.actor_resource in n.get("Resources", {})]
        if not holders:
            raise ConfigError(f"no live Ray node has the resource {self.actor_resource!r} that {ACTOR_RESOURCE_VAR} names; "
                              f"start one with ray start --resources '{{\"{self.actor_resource}\": 1}}' or unset {ACTOR_RESOURCE_VAR}")
        return NodeAffinitySchedulingStrategy(holders[0], soft=True)

    def _group_selector(self, num_gpus: float) -> dict[str, str]:
        """The label selector of every learner rank's bundle: the driver's node, hard, like any node that is not
        an actor; when the ranks ask for ``num_gpus`` GPUs in all and that node has fewer, any node but the one
        that have ``actor_resource`` (there is no soft variant for a placement group's bundles)."""
        here = ray.get_runtime_context().get_node_id()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        gpus = sum(float(n.get("Resources", {}).get("GPU", 0.0)) for n in nodes if n.get("NodeID") == here)
        if num_gpus <= gpus:
            return {_NODE_ID_LABEL: here}
        holders = [n["NodeID"] for n in nodes if self.actor_resource in n.get("Resources", {})]
        return {_NODE_ID_LABEL: f"!in({','.join(holders)})"} if holders else {}  # no spaces: Ray keeps them

    def spawn_group(self, cls: type, args: Sequence[tuple[Any, ...]], num_cpus: float = 1, num_gpus: float = 0,
                    strategy: str = "PACK", timeout_s: float = 120.0, names: Sequence[str] = ()) -> list[NodeHandle]:
        """One node per tuple of ``args``, kept together in one placement group (``PACK``: one node of the
        cluster when they fit there; ``STRICT_PACK`` insists); for learner ranks, which talk every step.
        ``names``: the nodes' names (for errors), one per tuple.

        The ranks are not restarted, so with ``actor_resource`` they go where a single learner would
        (:meth:`_affinity` of a node that is not an actor): on the driver's node, or, when they ask for
        more GPUs than it has, anywhere but the actors' node; losing the actors' node loses only actors.
        """
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = {"CPU": float(num_cpus), **({"GPU": float(num_gpus)} if num_gpus else {})}
        selector = self._group_selector(num_gpus * len(args)) if self.actor_resource else {}
        group = placement_group([dict(bundle) for _ in args], strategy=strategy,
                                **({"bundle_label_selector": [dict(selector) for _ in args]} if selector else {}))
        try:
            ray.get(group.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(group)
            where = f" on the nodes labelled {selector}" if selector else ""
            raise ConfigError(f"the Ray cluster cannot place {len(args)} learners of {bundle} each{where} within "
                              f"{timeout_s:.0f} s (available: {ray.available_resources()}); lower num_learners or add "
                              "resources") from None
        self._placement_groups = [*getattr(self, "_placement_groups", []), group]
        handles: list[NodeHandle] = []
        for i, node_args in enumerate(args):
            options: dict[str, Any] = {"scheduling_strategy": PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)}
            if self.node_runtime_env:
                options["runtime_env"] = self.node_runtime_env
            remote_cls: Any = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0)(_with_object_store(cls))
            actor = remote_cls.options(**options).remote(*(_unwrap(a) for a in node_args))
            self.actors.append(actor)
            handles.append(RayHandle(actor, names[i] if i < len(names) else f"{cls.__name__}-{i}"))
        return handles

    def get(self, futures: Future | Sequence[Future]) -> Any:
        if isinstance(futures, RayFuture):
            return _get(futures.ref, futures.node)
        if isinstance(futures, Future):
            return futures.result()
        refs = [f.ref for f in futures if isinstance(f, RayFuture)]
        if len(refs) == len(futures):
            return _get(refs)
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
        try:
            if getattr(self, "_placement_groups", None):
                from ray.util.placement_group import remove_placement_group

                for group in self._placement_groups:
                    try:
                        remove_placement_group(group)
                    except Exception:
                        pass
                self._placement_groups = []
        finally:
            if self.owns_ray:
                self.owns_ray = False
                try:
                    ray.shutdown()
                finally:
                    restore_auth_env(self._auth_before)


def run_tasks(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, num_cpus: float = 1, num_gpus: float = 0,
              max_parallel: int | None = None, address: str | None = None,
              cluster_cpus: int | None = None) -> Iterator[tuple[int, Any, BaseException | None]]:
    """Run ``fn(*args)`` for each ``args`` of ``calls`` as one Ray task each, at most ``max_parallel`` at a time.

    Yields ``(index, result, None)`` or ``(index, None, error)`` as each task ends, so one failed
    task never loses the others' results. ``fn`` must be importable by name on the workers (a
    module-level function of an installed package). Without a running Ray this starts a private
    one (``cluster_cpus`` logical CPUs, default the machine's cores) or connects to ``address``,
    and stops it when the iterator is exhausted or closed; tasks still running then are cancelled.
    ``num_gpus`` is what each task requests (Ray hides every GPU from a task that requests none).
    """
    backend = RayBackend(address=address, num_cpus=cluster_cpus)
    if num_gpus and not ray.cluster_resources().get("GPU"):
        backend.shutdown()
        raise ConfigError("device='cuda' but the Ray cluster has no GPU (cluster resources show GPU=0); "
                          "use device=cpu or add a node with a GPU")
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(fn)
    limit = max(1, max_parallel or len(calls))
    pending: dict[Any, int] = {}
    queued = list(enumerate(calls))
    try:
        while queued or pending:
            while queued and len(pending) < limit:
                i, args = queued.pop(0)
                pending[remote.remote(*args)] = i
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            try:
                yield i, ray.get(done[0]), None
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                yield i, None, cause if isinstance(cause, BaseException) else ShoalError(str(e).strip().splitlines()[0])
            except ray.exceptions.RayError as e:  # the worker process died (killed, out of memory)
                text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                yield i, None, ShoalError(f"the Ray task's worker failed: {text}")
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        backend.shutdown()
