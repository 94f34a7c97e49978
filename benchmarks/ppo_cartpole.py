"""PPO on CartPole-v1: shoal (its defaults) against Stable-Baselines3 (rl-zoo hyperparameters), same machine, same run.

Each library trains in a fresh process (imports included, as a user would run it),
then evaluates 20 deterministic episodes on Gymnasium's CartPole-v1. Per seed it times
shoal's full default run (100k steps, as `shoal train ppo --env CartPole-v1`), shoal
trained until an evaluation every 2,048 steps reaches 475 (time to solve), and SB3's
100k-step rl-zoo run; ratios are taken seed by seed.

    python benchmarks/ppo_cartpole.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from shoal.bench.peers import sb3_ppo_cartpole, timed_python

SHOAL = """
import json, sys, time
t0 = time.perf_counter()
import shoal
run = shoal.train("ppo", "CartPole-v1", seed={seed}, run_dir={run_dir!r}, quiet=True, tensorboard=False,
                  overrides={overrides!r})
print(json.dumps({{"train_s": run.wall_time_s, "eval": run.eval["mean_return"], "steps": run.env_steps,
                   "in_process_s": time.perf_counter() - t0}}))
"""

def timed(code: str) -> dict:
    return timed_python(code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--skip-sb3", action="store_true", help="time shoal only")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for seed in args.seeds:
            full = timed(SHOAL.format(seed=seed, run_dir=str(Path(d) / f"full{seed}"), overrides={}))
            solve = timed(SHOAL.format(seed=seed, run_dir=str(Path(d) / f"solve{seed}"),
                                       overrides={"eval_every": 2048, "target_return": 475.0}))
            b = None if args.skip_sb3 else sb3_ppo_cartpole(seed)
            rows.append((seed, full, solve, b))
            line = (f"seed {seed}: shoal full run {full['process_s']:6.2f}s (eval {full['eval']:.1f}) | "
                    f"shoal to 475 {solve['process_s']:6.2f}s ({solve['steps']:,} steps, eval {solve['eval']:.1f})")
            if b:
                line += (f" | SB3 {b['process_s']:6.2f}s (train {b['train_s']:5.2f}s, eval {b['eval']:.1f})"
                         f" | ratios {full['process_s'] / b['process_s']:.3f} / {solve['process_s'] / b['process_s']:.3f}")
            print(line, flush=True)
    med = lambda xs: statistics.median(xs)  # noqa: E731
    print()
    print(f"shoal full default run: median {med([r[1]['process_s'] for r in rows]):.2f}s, "
          f"eval >= 475 in {sum(r[1]['eval'] >= 475 for r in rows)}/{len(rows)}")
    print(f"shoal time to eval >= 475: median {med([r[2]['process_s'] for r in rows]):.2f}s, "
          f"solved in {sum(r[2]['eval'] >= 475 for r in rows)}/{len(rows)}")
    if not args.skip_sb3:
        print(f"SB3 100k rl-zoo run: median {med([r[3]['process_s'] for r in rows]):.2f}s, "
              f"eval >= 475 in {sum(r[3]['eval'] >= 475 for r in rows)}/{len(rows)}")
        print(f"ratio shoal/SB3, whole processes, median over seeds: full run "
              f"{med([r[1]['process_s'] / r[3]['process_s'] for r in rows]):.3f}, time to 475 "
              f"{med([r[2]['process_s'] / r[3]['process_s'] for r in rows]):.3f}  (targets: <= 0.5, goal 0.15)")

if __name__ == "__main__":
    main()
