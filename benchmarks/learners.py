"""Learner groups: updates/s of 1 and 2 learners on one fixed, compute-bound batch, and the all-reduce's share.

    python benchmarks/learners.py                  # 5 interleaved rounds of 20 updates per setting
    python benchmarks/learners.py --rounds 3 --updates 10 --algos dqn

Each algorithm gets one fixed batch of 4,096 samples for 256x256 MLPs on CartPole-v1's
spaces: DQN a synthetic batch of transitions (Double-DQN targets, so every update runs the
online network on 8,192 observations and the target on 4,096), PPO one rollout of 64 env
copies x 64 steps collected once (one epoch over the whole batch per update, as A2C). The
settings timed, each learner in a process of its own with one torch thread (shoal's default):

- ``1 learner``: one process, the whole batch, no group;
- ``2 learners``: two ranks in one gloo group, each on its half, gradients averaged by one
  all-reduce of the flat gradient buffer every update;
- ``1 learner, 2 threads``: the whole batch on two intra-op threads (the other way to use two cores).

Rounds interleave the settings, so load from other processes falls on all of them alike; the
printed figures are medians over rounds of the seconds per update measured inside the learner
processes (sending the batch is not timed), the 2-learner all-reduce time per update (packing,
reducing and unpacking the gradient, and waiting there for the slower rank), CPU seconds per
update and rank (the work split, which other processes' load does not change), the all-reduce of a
gradient that size alone (2 ranks already in step), and 2 learners' update time over 1 learner's. On a
shared machine the figures are noisy; CPU contention from other processes hurts the 2-learner
setting most, since it needs both cores at once.

NCCL (``device=cuda``) needs one GPU per rank on one host; this script times gloo on the CPU.
When ``benchmarks/_learners_ps.py`` exists, its ``parameter_server_figures()`` (applied
gradients/s of the sharded parameter server) is printed too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH = 4096
HIDDEN = [256, 256]


def contexts(threads: int = 1) -> dict[str, Any]:
    """The node context of each algorithm timed, with ``threads`` intra-op threads per learner."""
    from dataclasses import asdict

    from shoal.agents import registry
    from shoal.config import build
    from shoal.envs import env_spec
    from shoal.topologies.nodes import NodeContext

    settings = {"dqn": {"hidden": HIDDEN, "batch_size": BATCH, "buffer_size": BATCH, "double": True},
                "ppo": {"hidden": HIDDEN, "num_envs": 64, "rollout_length": 64, "epochs": 1, "minibatch_size": 0}}
    out = {}
    for algo, agent in settings.items():
        cfg = asdict(build(registry.get(algo).config_cls(), agent))
        out[algo] = NodeContext(algo, cfg, "CartPole-v1", env_spec("CartPole-v1"), 1_000_000, seed=0, torch_threads=threads)
    return out


def fixed_batch(algo: str, ctx: Any) -> Any:
    """DQN: 4,096 synthetic transitions; PPO: one 64 x 64 rollout collected by an actor (both fixed by seed)."""
    if algo == "dqn":
        rng = np.random.default_rng(0)
        return {"obs": rng.normal(size=(BATCH, 4)).astype(np.float32), "action": rng.integers(0, 2, BATCH),
                "reward": rng.normal(size=BATCH).astype(np.float32),
                "discount": np.full(BATCH, 0.99, np.float32), "next_obs": rng.normal(size=(BATCH, 4)).astype(np.float32)}
    from shoal.topologies.nodes import ActorNode

    actor = ActorNode(ctx, 0, 1, env_seed=1, actor_seed=2)
    _, rollout = actor.run(64)
    actor.close()
    assert rollout.num_steps == BATCH
    return rollout


def time_settings(algo: str, rounds: int, updates: int) -> dict[str, Any]:
    """Median seconds per update of each setting over interleaved rounds (and the all-reduce's per update)."""
    from shoal.backends.inprocess import InProcessBackend
    from shoal.backends.process import ProcessHandle
    from shoal.topologies.learners import LearnerGroup, LearnerRankNode

    one, two_threads = contexts(1)[algo], contexts(2)[algo]
    batch = fixed_batch(algo, one)
    alone = ProcessHandle(LearnerRankNode, one, 0, 1, name="alone")
    threaded = ProcessHandle(LearnerRankNode, two_threads, 0, 1, name="alone-2-threads")
    group = LearnerGroup(InProcessBackend(), LearnerRankNode, one, 2, timeout_s=120)
    times: dict[str, list[float]] = {"1 learner": [], "2 learners": [], "1 learner, 2 threads": [], "allreduce": [],
                                     "1 learner cpu": [], "2 learners cpu": []}
    try:
        # One warm-up round each: first calls pay for allocations and lazy initialisation.
        alone.call("update", batch, 2).result()
        threaded.call("update", batch, 2).result()
        group.each("update", batch, 2)
        for _ in range(rounds):
            m = alone.call("update", batch, updates).result()
            times["1 learner"].append(m["update_s"])
            times["1 learner cpu"].append(m["cpu_s"])
            ranks = group.each("update", batch, updates)
            times["2 learners"].append(max(m["update_s"] for m in ranks))
            times["2 learners cpu"].append(max(m["cpu_s"] for m in ranks))
            times["allreduce"].append(max(m["allreduce_s"] for m in ranks))
            times["1 learner, 2 threads"].append(threaded.call("update", batch, updates).result()["update_s"])
    finally:
        group.close()
        alone.close()
        threaded.close()
    numel = sum(int(np.prod(v.shape)) for v in one.builder().make_networks().parameters())
    return {k: statistics.median(v) for k, v in times.items()} | {"rounds": rounds, "updates": updates, "params": numel,
                                                                 "allreduce_alone": allreduce_alone(numel)}


def allreduce_alone(numel: int, repeats: int = 200) -> float:
    """Median seconds of one all-reduce of ``numel`` float32 values between 2 gloo ranks already in step
    (ranks on threads of this process): the communication alone, without waiting for a slower rank."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from shoal.core.distributed import Collective, Rendezvous, free_port

    rendezvous = Rendezvous("127.0.0.1", free_port("127.0.0.1"), 2, timeout_s=60)
    done = threading.Barrier(2)

    def rank(r: int) -> list[float]:
        c = Collective(r, rendezvous)
        p = torch.nn.Parameter(torch.zeros(numel))
        p.grad = torch.ones(numel)
        out = []
        for _ in range(repeats):
            c.barrier()
            t0 = time.perf_counter()
            c.average_gradients([p])
            out.append(time.perf_counter() - t0)
        done.wait(timeout=60)
        c.close()
        return out

    with ThreadPoolExecutor(2) as pool:
        times = [f.result(timeout=300) for f in [pool.submit(rank, r) for r in range(2)]]
    return statistics.median(max(a, b) for a, b in zip(*times))


def report(algo: str, t: dict[str, Any]) -> None:
    print(f"\n{algo}: batch {BATCH}, MLP {'x'.join(map(str, HIDDEN))}, median of {t['rounds']} rounds x {t['updates']} updates")
    for name in ("1 learner", "2 learners", "1 learner, 2 threads"):
        print(f"  {name:<22} {1000 * t[name]:8.1f} ms/update  {1 / t[name]:7.1f} updates/s")
    print(f"  2-learner all-reduce   {1000 * t['allreduce']:8.2f} ms/update  ({100 * t['allreduce'] / t['2 learners']:.1f}% of an "
          "update, waiting for the slower rank included)")
    print(f"  all-reduce alone       {1000 * t['allreduce_alone']:8.2f} ms  ({t['params']:,} float32 gradients, ranks in step)")
    print(f"  2 learners / 1 learner: {t['2 learners'] / t['1 learner']:.2f}x the update time; CPU per update and rank "
          f"{1000 * t['2 learners cpu']:.1f} ms vs {1000 * t['1 learner cpu']:.1f} ms "
          f"({t['2 learners cpu'] / t['1 learner cpu']:.2f}x, the work each rank does, whatever the load)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--updates", type=int, default=20, help="updates per round and setting")
    p.add_argument("--algos", nargs="+", default=["dqn", "ppo"], choices=["dqn", "ppo"])
    p.add_argument("--json", help="also write the figures as JSON here")
    p.add_argument("--no-parameter-server", action="store_true", help="skip the parameter server's figures")
    a = p.parse_args()
    results: dict[str, Any] = {}
    for algo in a.algos:
        results[algo] = time_settings(algo, a.rounds, a.updates)
        report(algo, results[algo])
    # The sharded parameter server's section, where its module exists.
    if not a.no_parameter_server and (Path(__file__).resolve().parent / "_learners_ps.py").exists():
        import importlib

        rows = importlib.import_module("_learners_ps").parameter_server_figures()
        print("\nparameter server: applied gradients/s by shard count")
        for row in rows:
            print(f"  {row['shards']} shard(s)  {row['applied_gradients_per_s']:10,.1f} applied gradients/s")
        results["parameter_server"] = rows
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
