"""The measurements behind `shoal bench`."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from shoal.run.checkpoint import atomic_write_text


def ppo_cartpole(seed: int = 0) -> dict:
    """Train PPO with shoal's CartPole defaults and time it until eval mean >= 475."""
    from shoal.run.runner import train

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        run = train("ppo", "CartPole-v1", seed=seed, run_dir=Path(d) / "run", quiet=True, tensorboard=False)
        wall = time.perf_counter() - t0
    return {"bench": "ppo-cartpole", "seed": seed, "wall_time_s": wall, "env_steps": run.env_steps,
            "eval_mean_return": run.eval["mean_return"], "solved": run.eval["mean_return"] >= 475}


def run(args: argparse.Namespace) -> int:
    if args.bench_cmd == "ppo-cartpole":
        result = ppo_cartpole(args.seed)
        print(f"ppo-cartpole  wall {result['wall_time_s']:.2f}s  env steps {result['env_steps']:,}  "
              f"eval {result['eval_mean_return']:.1f}  solved={result['solved']}")
        atomic_write_text(Path(args.json), json.dumps(result, indent=2))
        return 0 if result["solved"] else 1
    raise SystemExit(f"unknown bench command {args.bench_cmd}")
