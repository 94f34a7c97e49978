"""A Ray node lost mid-run: its actors are restarted on the surviving node and the run finishes.

Two Ray nodes on this machine: the head in the machine's own network namespace and a second
node inside a Linux network namespace made for the test, joined to the head by a veth pair
on a private /30. Both have token authentication on and fixed ports. A training run (its own
process, connected with ``--ray-address``) places its actor nodes on the second node (the
custom resource ``SHOAL_RAY_ACTOR_RESOURCE`` names) and every other node on the head; then
every process of the second node is killed -9 (raylet, agents, workers), as when a machine
drops off the network. Ray marks the node dead once its heartbeats stop, restarts the actors
(``max_restarts``) on the head, they pull the newest parameters, and the run goes on.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from shoal.io.checkpoint import list_checkpoints, load_checkpoint

STEPS = 100_000
KILL_AT = 20_000  # env steps logged before the second node is killed
ACTOR_TITLE = "ray::ImpalaActorNode"
SERVICE_TITLES = ("ray::ImpalaLearnerNode", "ray::QueueNode", "ray::VariableServer")
RESOURCE = "shoal_far"
_AUTH = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
#: This Python's ``ray`` command (the one installed next to it), else the first on PATH.
RAY = str(Path(sys.executable).with_name("ray")) if Path(sys.executable).with_name("ray").exists() else shutil.which("ray")


def _sh(*cmd: str, timeout: float = 30, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env)


def _ports_free(host: str, ports: list[int]) -> bool:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def _port_block(count: int) -> int:
    """The first port of ``count`` consecutive ports free on every interface of this machine."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        base = rng.randrange(30_000, 60_000 - count)
        if _ports_free("", list(range(base, base + count))):
            return base
    raise RuntimeError(f"no block of {count} free ports found")


def _ray_ports(base: int) -> list[str]:
    """``ray start`` options fixing every port a node opens: ``base`` .. ``base + 7`` and 100 worker ports after."""
    names = ["--node-manager-port", "--object-manager-port", "--runtime-env-agent-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port"]
    out = [f"{name}={base + 1 + i}" for i, name in enumerate(names)]
    return [*out, f"--min-worker-port={base + 10}", f"--max-worker-port={base + 109}"]


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def _netns_pids(ns: str) -> list[int]:
    r = _sh("ip", "netns", "pids", ns)
    return [int(x) for x in r.stdout.split()] if r.returncode == 0 else []


def _processes(pids: list[int]) -> list[psutil.Process]:
    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return out


def _titled(pids: list[int], title: str) -> list[int]:
    """Those of ``pids`` whose Ray process title starts with ``title`` (e.g. ``ray::ImpalaActorNode``)."""
    out = []
    for p in _processes(pids):
        argv = _cmdline(p)
        if argv and argv[0].startswith(title):
            out.append(p.pid)
    return out


def _head_processes(temp_dir: str, address: str) -> list[psutil.Process]:
    """Every process of the head node: those naming its temp folder or its address (the Ray client server), and
    everything they started (its workers)."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    roots = [p for p in psutil.process_iter()
             if p.pid not in mine and any(temp_dir in a or f"={address}" in a for a in _cmdline(p))]
    family = {p.pid: p for p in roots}
    for p in roots:
        try:
            family.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    return list(family.values())


def _kill(procs: list[psutil.Process], grace_s: float = 10.0) -> None:
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)


@dataclass
class Cluster:
    """The two nodes: the head at ``head_ip:port``, the second node inside network namespace ``ns``."""

    ns: str
    head_ip: str
    far_ip: str
    port: int
    head_dir: str
    env: dict[str, str]

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.port}"


def _make_namespace(ns: str, veth: str, head_ip: str, far_ip: str) -> None:
    """Network namespace ``ns`` joined to this one by a veth pair on a /30: ``head_ip`` here, ``far_ip`` there."""
    peer = veth[:-1] + "n"
    steps = [("ip", "netns", "add", ns), ("ip", "link", "add", veth, "type", "veth", "peer", "name", peer),
             ("ip", "link", "set", peer, "netns", ns), ("ip", "addr", "add", f"{head_ip}/30", "dev", veth),
             ("ip", "link", "set", veth, "up"), ("ip", "netns", "exec", ns, "ip", "addr", "add", f"{far_ip}/30", "dev", peer),
             ("ip", "netns", "exec", ns, "ip", "link", "set", peer, "up"), ("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")]
    for cmd in steps:
        r = _sh(*cmd)
        if r.returncode != 0:
            raise OSError(f"{' '.join(cmd)}: {r.stderr.strip()}")


@pytest.fixture
def two_node_cluster() -> Iterator[Cluster]:
    """A Ray head here and a second node (CPUs for two actors, resource ``shoal_far``) in a network namespace."""
    if os.geteuid() != 0 or shutil.which("ip") is None or RAY is None:
        pytest.skip("network namespaces need root and iproute2's ip (and Ray's ray command)")
    tag = f"{os.getpid() % 100_000}"
    ns, veth = f"shoal-nl-{tag}", f"shnl{tag}h"
    block = (os.getpid() % 16_000) * 4  # a /30 of 10.213.0.0/16 of this process
    net = ipaddress.ip_network(f"10.213.{block // 256}.{block % 256}/30")
    head_ip, far_ip = (str(h) for h in net.hosts())
    head_dir, far_dir = tempfile.mkdtemp(prefix="shoal-nl-head-"), tempfile.mkdtemp(prefix="shoal-nl-far-")
    base = 0
    env = {k: v for k, v in os.environ.items() if k not in _AUTH}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
    try:
        try:
            _make_namespace(ns, veth, head_ip, far_ip)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"cannot make a network namespace here ({e})")
        base = _port_block(110)  # fixed for the test's life: the head's own ports, and the same numbers in the namespace
        head = _sh(RAY, "start", "--head", f"--node-ip-address={head_ip}", f"--port={base}", *_ray_ports(base),
                   f"--ray-client-server-port={base + 8}", "--include-dashboard=false", "--num-cpus=4",
                   f"--temp-dir={head_dir}", "--object-store-memory=200000000", "--disable-usage-stats", timeout=120, env=env)
        assert head.returncode == 0, head.stderr[-2000:]
        far = subprocess.run(["ip", "netns", "exec", ns, RAY, "start", f"--address={head_ip}:{base}",
                              f"--node-ip-address={far_ip}", *_ray_ports(base), "--num-cpus=2",
                              f"--resources={json.dumps({RESOURCE: 2})}", f"--temp-dir={far_dir}",
                              "--object-store-memory=200000000", "--disable-usage-stats"],
                             capture_output=True, text=True, timeout=120, env=env)
        assert far.returncode == 0, far.stderr[-2000:]
        yield Cluster(ns, head_ip, far_ip, base, head_dir, env)
    finally:
        _kill(_processes(_netns_pids(ns)))
        _kill(_head_processes(head_dir, f"{head_ip}:{base}"))
        _sh("ip", "netns", "del", ns)
        _sh("ip", "link", "del", veth)  # gone with the namespace already, unless the namespace was never made
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(far_dir, ignore_errors=True)


def _rows(run: Path) -> list[dict[str, str]]:
    path = run / "metrics.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [r for r in csv.DictReader(f) if r.get("env_steps")]


def _wait(what: str, cond, timeout: float, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cond()
        if out:
            return out
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before {what}: {log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f} s: {what}; {log.read_text()[-3000:]}")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_lost_ray_node_has_its_actors_restarted_on_the_survivor_and_the_run_finishes(two_node_cluster, tmp_path):
    c = two_node_cluster
    run, log_path = tmp_path / "run", tmp_path / "driver.log"
    cmd = [sys.executable, "-m", "shoal.cli", "train", "impala", "--env", "CartPole-v1", "--backend", "ray",
           "--ray-address", c.address, "--num-actors", "2", "--steps", str(STEPS), "--run-dir", str(run), "--quiet",
           "num_envs=2", "rollout_length=16", "eval_episodes=0", "log_every=1000"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                env={**c.env, "SHOAL_RAY_ACTOR_RESOURCE": RESOURCE})
    try:
        _wait(f"{KILL_AT} env steps logged", lambda: (r := _rows(run)) and int(r[-1]["env_steps"]) >= KILL_AT, 240, proc,
              log_path)
        far = _netns_pids(c.ns)
        assert len(_titled(far, ACTOR_TITLE)) == 2, "the actors are not on the second node"
        assert not [t for t in SERVICE_TITLES if _titled(far, t)], "a service node is on the second node"

        steps_at_kill = int(_rows(run)[-1]["env_steps"])
        killed = time.monotonic()
        for pid in far:  # every process of the second node: raylet, agents, the actors' workers
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait("the second node's processes gone", lambda: not _netns_pids(c.ns), 30, proc, log_path)

        def actors_on_head() -> list[int]:
            pids = [p.pid for p in _head_processes(c.head_dir, c.address)]
            found = _titled(pids, ACTOR_TITLE)
            return found if len(found) == 2 else []

        _wait("both actors restarted on the head node", actors_on_head, 180, proc, log_path)
        rescheduled_s = time.monotonic() - killed
        _wait("env steps counted again", lambda: int(_rows(run)[-1]["env_steps"]) > steps_at_kill, 120, proc, log_path)
        resumed_s = time.monotonic() - killed
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    text = log_path.read_text()
    assert proc.returncode == 0, text[-3000:]
    rows = _rows(run)
    _, final = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])  # the run's last act: its final checkpoint
    print(f"second node killed at {steps_at_kill} env steps; actors back on the head after {rescheduled_s:.1f} s, "
          f"env steps counted again after {resumed_s:.1f} s; the run finished {final['env_steps']} env steps")
    assert final["env_steps"] >= STEPS
    assert max(float(r.get("actor_restarts") or 0) for r in rows) == 2.0  # both actors, each once
    assert text.count("died") >= 2 and "only actor nodes are restarted" not in text
    learned = [r for r in rows if r.get("learner_env_steps")]
    # the learner kept consuming after the node was lost, from the restarted actors
    assert float(learned[-1]["learner_env_steps"]) > steps_at_kill + 0.5 * (STEPS - steps_at_kill)
    # the restarted actors acted with the newest parameters: none of their unrolls lagged past max_policy_lag
    assert float(learned[-1]["dropped_unrolls"]) == 0.0


@pytest.mark.ray
@pytest.mark.timeout(60)
def test_actor_placement_by_resource_needs_a_node_that_has_it_and_keeps_other_nodes_on_the_drivers():
    import ray

    from shoal.backends.ray import RayBackend
    from shoal.errors import ConfigError
    from shoal.topologies.impala import QueueNode
    from shoal.topologies.restarts import ActorRestarts

    backend = RayBackend(actor_resource="shoal_no_such_resource")  # the session's Ray instance: one node, no such resource
    try:
        with pytest.raises(ConfigError, match=r"no live Ray node has the resource 'shoal_no_such_resource'"):
            backend.spawn(QueueNode, 4, num_cpus=0, max_restarts=1, actor=True)  # an actor node
        # An actor is placed as one by its role, not by its restart budget: with max_restarts=0 too
        with pytest.raises(ConfigError, match=r"no live Ray node has the resource 'shoal_no_such_resource'"):
            ActorRestarts(1, max_restarts=0).spawn(backend, QueueNode, 4, name="actor-0", num_cpus=0)
        service = backend._affinity(actor=False)  # a node that is not an actor: pinned to the driver's node
        assert service.node_id == ray.get_runtime_context().get_node_id() and service.soft is False
    finally:
        backend.shutdown()


@pytest.mark.ray
@pytest.mark.timeout(60)
def test_a_gpu_learner_is_not_pinned_to_a_driver_node_without_gpus():
    """A learner asking for a GPU the driver's node lacks (a GPU-less head) only prefers that node: pinned, it would
    wait unscheduled forever."""
    import ray

    from shoal.backends.ray import RayBackend

    here = ray.get_runtime_context().get_node_id()
    gpus = sum(float(n.get("Resources", {}).get("GPU", 0.0)) for n in ray.nodes() if n.get("NodeID") == here)
    backend = RayBackend(actor_resource="shoal_no_such_resource")
    try:
        learner = backend._affinity(actor=False, num_gpus=gpus + 1)
        assert learner.node_id == here and learner.soft is True
        if gpus >= 1:
            assert backend._affinity(actor=False, num_gpus=1).soft is False
    finally:
        backend.shutdown()


@pytest.mark.ray
@pytest.mark.timeout(60)
def test_learner_ranks_go_to_the_drivers_node_when_actors_are_placed_by_resource(monkeypatch):
    """The ranks of a learner group (``num_learners > 1``) are not restarted: with ``actor_resource`` their placement
    group's bundles select the driver's node by its node-id label, as a single learner's hard affinity does."""
    import importlib

    import ray

    from shoal.backends.ray import RayBackend
    from shoal.topologies.impala import QueueNode

    pg = importlib.import_module("ray.util.placement_group")  # the module (ray.util.placement_group is the function)
    asked: list[dict] = []
    real = pg.placement_group

    def recording(*args, **kwargs):
        asked.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pg, "placement_group", recording)
    here = ray.get_runtime_context().get_node_id()
    backend = RayBackend(actor_resource="shoal_no_such_resource")
    try:
        ranks = backend.spawn_group(QueueNode, [(4,), (4,)], num_cpus=0.01, timeout_s=30)
        assert asked[-1]["bundle_label_selector"] == [{"ray.io/node-id": here}] * 2
        assert backend.get([r.call("size") for r in ranks]) == [0, 0]  # placed (the label is the node's own)
        table = pg.placement_group_table(backend._placement_groups[-1])
        assert set(table["bundles_to_node_id"].values()) == {here}
        # ranks asking for more GPUs than the driver's node has may go anywhere but the actors' node; with no node
        # that has the resource there is no such node to avoid
        gpus = sum(float(n.get("Resources", {}).get("GPU", 0.0)) for n in ray.nodes() if n.get("NodeID") == here)
        assert backend._group_selector(gpus + 1) == {}
        # with two nodes holding it, the ranks avoid both (a selector Ray accepts: the group is placed here)
        holders = [{"NodeID": c * 56, "Alive": True, "Resources": {"shoal_no_such_resource": 1.0}} for c in "ab"]
        nodes = ray.nodes
        monkeypatch.setattr(ray, "nodes", lambda: nodes() + holders)
        selector = backend._group_selector(gpus + 1)
        assert selector == {"ray.io/node-id": f"!in({'a' * 56},{'b' * 56})"}
        group = real(bundles=[{"CPU": 0.01}], strategy="PACK", bundle_label_selector=[selector])
        try:
            assert group.wait(timeout_seconds=30)
            assert set(pg.placement_group_table(group)["bundles_to_node_id"].values()) == {here}
        finally:
            pg.remove_placement_group(group)
        # and Ray honours the exclusion: with this (only) node among the holders, the group is not placed
        holders.append({"NodeID": here, "Alive": True, "Resources": {"shoal_no_such_resource": 1.0}})
        excluded = real(bundles=[{"CPU": 0.01}], strategy="PACK", bundle_label_selector=[backend._group_selector(gpus + 1)])
        try:
            assert not excluded.wait(timeout_seconds=3)
        finally:
            pg.remove_placement_group(excluded)
    finally:
        backend.shutdown()


@pytest.mark.ray
@pytest.mark.timeout(60)
def test_a_value_ray_lost_with_its_owner_is_a_one_line_data_lost_error():
    """A result whose object Ray can no longer read (its owner's process is gone) is shoal's DataLost, not a Ray
    traceback: the same path as a value lost with its machine."""
    import numpy as np
    import ray

    from shoal.backends.base import DataLost
    from shoal.backends.ray import _get

    @ray.remote(num_cpus=0)
    class Owner:
        def make(self) -> list:
            return [ray.put(np.zeros(1 << 18))]  # 2 MiB in the object store, owned by this actor's process

        def size(self, value) -> int:
            return int(value.size)

    owner, reader = Owner.remote(), Owner.remote()
    (ref,) = ray.get(owner.make.remote(), timeout=30)
    ray.kill(owner, no_restart=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            _get(ref, "actor-0")
        except DataLost as e:
            message = str(e)
            break
        assert time.monotonic() < deadline, "the value stayed readable after its owner was killed"
        time.sleep(0.2)
    assert "\n" not in message and "node actor-0" in message and "shoal train --resume" in message, message
    # the local topology's path: the lost value is another node's argument (Ray resolves it before the call)
    with pytest.raises(DataLost, match="node learner could not read a value"):
        _get(reader.size.remote(ref), "learner")
    ray.kill(reader, no_restart=True)


@pytest.mark.timeout(60)
def test_a_local_round_whose_data_was_lost_is_run_again_before_the_learner_steps(tmp_path, monkeypatch, caplog):
    """The learner never sees a partial round: when the actors' data is lost on its way to the learner, the
    actors run the round again, and the env steps of both rounds count."""
    import shoal
    from shoal.backends.base import DataLost
    from shoal.backends.inprocess import InProcessHandle

    real = InProcessHandle.call
    calls = {"run": 0, "learn": 0, "lost": 0}

    def call(self, method, *args, **kwargs):
        if method in ("run", "learn"):
            calls[method] += 1
        if method == "learn" and calls["lost"] == 0 and calls["learn"] == 2:
            calls["lost"] += 1
            raise DataLost("a call of node learner could not read a value Ray lost (simulated)", node="learner")
        return real(self, method, *args, **kwargs)

    monkeypatch.setattr(InProcessHandle, "call", call)
    r = shoal.train("ppo", "CartPole-v1", steps=2048, seed=0, run_dir=tmp_path / "run", quiet=True, tensorboard=False,
                    overrides={"num_envs": 4, "rollout_length": 128, "eval_episodes": 1})
    per_round = 4 * 128
    assert calls["lost"] == 1 and "run the round again" in caplog.text
    # the second round's data was lost: its actors ran it again before the learner's next call, and its env steps
    # counted too, so the 2,048 steps took 4 rounds, one of them lost (3 learner calls succeeded)
    assert calls["run"] == 4 and calls["learn"] == 4, calls
    assert r.env_steps == 4 * per_round
