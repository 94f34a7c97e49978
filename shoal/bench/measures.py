"""The measurements behind `shoal bench`: raw env rate, sampler rate, learner rate, PPO time-to-475."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from shoal.io.checkpoint import atomic_write_text
from shoal.run.resolve import split_keys


def _timed_loop(step, min_seconds: float, min_calls: int) -> tuple[int, float]:
    """Call ``step()`` until both minimums are met; returns (calls, seconds)."""
    step()  # warm-up (first-call allocations)
    calls, t0 = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        dt = time.perf_counter() - t0
        if calls >= min_calls and dt >= min_seconds:
            return calls, dt


def env_rate(env_id: str, num_envs: int, vector: str = "auto", seconds: float = 3.0, seed: int = 0) -> dict[str, Any]:
    """Raw env steps/s with uniformly random actions (precomputed, so only the env is timed)."""
    from shoal.envs import make_vec_env

    env = make_vec_env(env_id, num_envs, seed=seed, mode=vector, check=False)
    space = env.single_action_space
    rng = np.random.default_rng(seed)
    space.seed(seed)
    bank = np.stack([np.stack([space.sample() for _ in range(num_envs)]) for _ in range(64)])
    i = [0]

    def step() -> None:
        env.env.step(bank[i[0] % 64])
        i[0] += 1

    calls, dt = _timed_loop(step, seconds, 50)
    env.close()
    del rng
    return {"bench": "env", "env": env_id, "num_envs": num_envs, "vector": vector,
            "steps_per_s": calls * num_envs / dt, "vector_steps": calls, "seconds": dt}


def sampler_rate(env_id: str, num_envs: int, algo: str = "ppo", backend: str = "inprocess", num_actors: int = 1,
                 vector: str = "auto", seconds: float = 3.0, seed: int = 0) -> dict[str, Any]:
    """Env steps/s of shoal's actor loop (policy network, adder/rollout storage, episode metrics)."""
    from shoal.agents import registry
    from shoal.backends import make_backend
    from shoal.config import build, to_dict
    from shoal.core.seeding import derive_seed
    from shoal.envs import env_spec
    from shoal.topologies.nodes import ActorNode, NodeContext

    spec = registry.get(algo)
    agent = to_dict(build(spec.config_cls(), {**split_keys(spec.defaults(env_id))[1], "num_envs": num_envs}))
    ctx = NodeContext(algo, agent, env_id, env_spec(env_id), 10**9, seed, 1, "cpu", vector)
    be = make_backend(backend, num_cpus=max(2, num_actors + 1) if backend == "ray" else None)
    try:
        actors = [be.spawn(ActorNode, ctx, i, num_actors, derive_seed(seed, "env", i), derive_seed(seed, "actor", i))
                  for i in range(num_actors)]
        steps = ctx.builder().steps_per_iteration

        def step() -> None:
            be.get([a.call("run", steps, num_returns=2)[0] for a in actors])

        calls, dt = _timed_loop(step, seconds, 3)
    finally:
        be.shutdown()
    return {"bench": "sampler", "env": env_id, "algo": algo, "num_envs": num_envs, "num_actors": num_actors,
            "backend": backend, "vector": vector, "steps_per_s": calls * steps * num_envs * num_actors / dt, "seconds": dt}


def learner_rate(algo: str, env_id: str, seconds: float = 3.0, seed: int = 0) -> dict[str, Any]:
    """Samples/s consumed by the learner's update, on batches collected once from the env."""
    from shoal.agents import registry
    from shoal.config import build
    from shoal.envs import env_spec
    from shoal.topologies.nodes import ActorNode, LearnerNode, NodeContext

    spec = registry.get(algo)
    from shoal.config import to_dict

    agent = to_dict(build(spec.config_cls(), split_keys(spec.defaults(env_id))[1]))
    ctx = NodeContext(algo, agent, env_id, env_spec(env_id), 10**9, seed, 1, "cpu", "auto")
    actor = ActorNode(ctx, 0, 1, seed, seed + 1)
    learner = LearnerNode(ctx)
    builder = learner.builder
    if learner.tables:
        # Fill the replay with real transitions until learning can start.
        env_steps = 0
        while learner.builder.learner_steps_due(env_steps, 0) == 0 or env_steps < 2048:
            report, data = actor.run(builder.steps_per_iteration)
            env_steps += report.env_steps
            learner.learn(0, data)  # insert only: no learner step is due at env step 0
        batch = int(getattr(builder.config, "batch_size", 1))

        def step() -> None:
            learner.learner.step(None)

        calls, dt = _timed_loop(step, seconds, 20)
        samples = calls * batch
    else:
        _, rollout = actor.run(builder.steps_per_iteration)

        def step() -> None:
            learner.learner.step([rollout])

        calls, dt = _timed_loop(step, seconds, 5)
        samples = calls * rollout.num_steps
    return {"bench": "learner", "algo": algo, "env": env_id, "samples_per_s": samples / dt, "updates": calls, "seconds": dt}


SHOAL_PPO_TO_475 = """
import json, time
import shoal
run = shoal.train("ppo", "CartPole-v1", seed={seed}, run_dir={run_dir!r}, quiet=True, tensorboard=False,
                  overrides={{"eval_every": {eval_every}, "target_return": 475.0}})
print(json.dumps({{"train_s": run.wall_time_s, "eval": run.eval["mean_return"], "steps": run.env_steps}}))
"""


def ppo_cartpole(seed: int = 0, eval_every: int = 2048) -> dict[str, Any]:
    """Wall-clock time for PPO (shoal's CartPole defaults) to reach eval mean >= 475.

    Timed as a whole process (imports included, as a user runs it). Evaluation every
    ``eval_every`` env steps: 20 deterministic episodes on Gymnasium's CartPole-v1; the
    clock includes those evaluations.
    """
    from shoal.bench.peers import timed_python

    with tempfile.TemporaryDirectory() as d:
        r = timed_python(SHOAL_PPO_TO_475.format(seed=seed, run_dir=str(Path(d) / "run"), eval_every=eval_every))
    return {"bench": "ppo-cartpole", "seed": seed, "wall_time_s": r["process_s"], "train_s": r["train_s"],
            "env_steps": r["steps"], "eval_mean_return": r["eval"], "solved": r["eval"] >= 475}


def run(args: argparse.Namespace) -> int:
    """Run one `shoal bench` subcommand, print a table and write JSON."""
    cmd = args.bench_cmd
    if cmd == "env":
        results = [env_rate(args.env, n, args.vector, args.seconds) for n in args.num_envs]
        rows = [(f"{r['env']} x{r['num_envs']} ({r['vector']})", f"{r['steps_per_s']:,.0f} steps/s") for r in results]
    elif cmd == "sampler":
        results = []
        rows = []
        for n in args.num_envs:
            raw = env_rate(args.env, n, args.vector, args.seconds)
            s = sampler_rate(args.env, n, args.algo, args.backend, args.num_actors, args.vector, args.seconds)
            s["raw_steps_per_s"] = raw["steps_per_s"] * args.num_actors
            s["ratio_to_raw"] = s["steps_per_s"] / s["raw_steps_per_s"]
            results.append(s)
            rows.append((f"{args.env} x{n} x{args.num_actors} actors ({args.backend})",
                         f"sampler {s['steps_per_s']:,.0f} steps/s | raw {s['raw_steps_per_s']:,.0f} | ratio {s['ratio_to_raw']:.2f}"))
    elif cmd == "learner":
        r = learner_rate(args.algo, args.env, args.seconds)
        results = [r]
        rows = [(f"{args.algo} learner on {args.env}", f"{r['samples_per_s']:,.0f} samples/s ({r['updates']} updates)")]
    elif cmd == "ppo-cartpole":
        results, rows = [], []
        for seed in args.seeds:
            r = ppo_cartpole(seed, args.eval_every)
            text = (f"{r['wall_time_s']:.2f}s to eval {r['eval_mean_return']:.1f} at {r['env_steps']:,} steps"
                    f"{'' if r['solved'] else ' (NOT solved)'}")
            if args.vs_sb3:
                from shoal.bench.peers import sb3_ppo_cartpole

                b = sb3_ppo_cartpole(seed)
                r.update(sb3_wall_time_s=b["process_s"], sb3_eval_mean_return=b["eval"], ratio=r["wall_time_s"] / b["process_s"])
                text += f" | SB3 100k {b['process_s']:.2f}s (eval {b['eval']:.1f}) | ratio {r['ratio']:.3f}"
            results.append(r)
            rows.append((f"ppo CartPole-v1 seed {seed}", text))
        if args.vs_sb3:
            import statistics

            rows.append(("median ratio shoal/SB3", f"{statistics.median(r['ratio'] for r in results):.3f}"))
    else:
        raise SystemExit(f"unknown bench command {cmd}")
    _print_table(rows)
    atomic_write_text(Path(args.json), json.dumps(results, indent=2))
    return 0


def _print_table(rows: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(show_header=True, header_style="bold")
    t.add_column("what")
    t.add_column("result")
    for a, b in rows:
        t.add_row(a, b)
    Console().print(t)
