"""PPO on CartPole-v1: shoal (its defaults) against Stable-Baselines3 (rl-zoo hyperparameters), same machine, same run.

Each library trains in a fresh process (imports included, as a user would run it),
then evaluates 20 deterministic episodes on Gymnasium's CartPole-v1. Runs alternate
shoal, SB3, shoal, SB3, ... and the ratio is taken pair by pair.

    python benchmarks/ppo_cartpole.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHOAL = """
import json, sys, time
t0 = time.perf_counter()
import shoal
run = shoal.train("ppo", "CartPole-v1", seed={seed}, run_dir={run_dir!r}, quiet=True, tensorboard=False)
print(json.dumps({{"train_s": run.wall_time_s, "eval": run.eval["mean_return"], "steps": run.env_steps,
                   "in_process_s": time.perf_counter() - t0}}))
"""

SB3 = """
import json, time
t0 = time.perf_counter()
import gymnasium as gym, numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

def linear(v):
    return lambda progress_remaining: progress_remaining * v

# rl-zoo hyperparameters for CartPole-v1 (ppo.yml)
env = make_vec_env("CartPole-v1", n_envs=8, seed={seed})
model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
            learning_rate=linear(0.001), clip_range=linear(0.2), seed={seed}, device="cpu", verbose=0)
t1 = time.perf_counter()
model.learn(total_timesteps=100_000)
train_s = time.perf_counter() - t1
returns = []
for i in range(20):
    e = gym.make("CartPole-v1")
    obs, _ = e.reset(seed=10_000 + i)
    done, total = False, 0.0
    while not done:
        a, _ = model.predict(obs, deterministic=True)
        obs, r, term, trunc, _ = e.step(int(a))
        total += r
        done = term or trunc
    returns.append(total)
print(json.dumps({{"train_s": train_s, "eval": float(np.mean(returns)), "steps": 100_000,
                   "in_process_s": time.perf_counter() - t0}}))
"""


def timed(code: str) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"benchmark process failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--skip-sb3", action="store_true", help="time shoal only")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for seed in args.seeds:
            s = timed(SHOAL.format(seed=seed, run_dir=str(Path(d) / f"shoal{seed}")))
            b = None if args.skip_sb3 else timed(SB3.format(seed=seed))
            rows.append((seed, s, b))
            line = f"seed {seed}: shoal {s['process_s']:6.2f}s (train {s['train_s']:5.2f}s, {s['steps']:,} steps, eval {s['eval']:.1f})"
            if b:
                line += (f" | SB3 {b['process_s']:6.2f}s (train {b['train_s']:5.2f}s, eval {b['eval']:.1f})"
                         f" | ratio {s['process_s'] / b['process_s']:.3f}")
            print(line, flush=True)
    print()
    print(f"shoal median whole-process time: {statistics.median(r[1]['process_s'] for r in rows):.2f}s; "
          f"solved (eval >= 475): {sum(r[1]['eval'] >= 475 for r in rows)}/{len(rows)}")
    if not args.skip_sb3:
        ratios = [r[1]["process_s"] / r[2]["process_s"] for r in rows]
        print(f"SB3   median whole-process time: {statistics.median(r[2]['process_s'] for r in rows):.2f}s; "
              f"solved: {sum(r[2]['eval'] >= 475 for r in rows)}/{len(rows)}")
        print(f"ratio shoal/SB3 (median of pairs): {statistics.median(ratios):.3f}  (issue targets: <= 0.5, goal 0.15)")


if __name__ == "__main__":
    main()
