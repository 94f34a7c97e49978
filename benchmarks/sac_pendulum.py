"""shoal SAC against Stable-Baselines3 SAC on Pendulum-v1, trained one after the other in one run.

    python benchmarks/sac_pendulum.py                  # 20k steps each (SB3 takes minutes on 2 cores)
    python benchmarks/sac_pendulum.py --steps 3000     # a quick look
    python benchmarks/sac_pendulum.py --shoal hidden=[256,256]   # shoal with SB3's network sizes

Each trainer runs in a fresh subprocess with the same torch thread count. shoal runs
``shoal.train("sac", env="Pendulum-v1", steps=N)`` with its shipped Pendulum defaults
(``shoal/configs/sac.yaml``) plus any ``--shoal key=value`` overrides; SB3 runs ``SAC("MlpPolicy",
learning_rate=1e-3)``, rl-zoo's Pendulum-v1 hyperparameters (SB3 defaults otherwise). The
timed span is building the agent plus training (time.perf_counter), evaluation excluded.
Both are then evaluated by the same code: deterministic actions, the same seeded episodes.
Needs ``pip install 'shoal[bench]'`` for the SB3 side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import run_worker, worker_args  # noqa: E402

ENV_ID = "Pendulum-v1"
TARGET_RATIO = 0.7


def _evaluate(policy: Any, episodes: int, seed: int) -> dict[str, float]:
    from shoal.envs.make import env_spec
    from shoal.run.evaluate import evaluate

    spec = env_spec(ENV_ID)
    r = evaluate(policy, ENV_ID, episodes, seed, (spec.action_low, spec.action_high))
    return {"eval_mean": r["mean_return"], "eval_std": r["std_return"]}


def worker_shoal(steps: int, seed: int, threads: int, episodes: int, overrides: list[str]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    import shoal
    from shoal.config import parse_overrides
    from shoal.run.reload import load_policy

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = shoal.train("sac", env=ENV_ID, steps=steps, seed=seed, run_dir=Path(tmp) / "run",
                          overrides={"eval_episodes": 0, "torch_threads": threads, **parse_overrides(overrides)})
        train_s = time.perf_counter() - t0
        policy, cfg, _ = load_policy(run.run_dir)
        result = {"train_s": train_s, "steps": run.env_steps, "hidden": cfg["agent"]["hidden"],
                  **_evaluate(policy, episodes, seed + 10_000)}
    return result


def worker_sb3(steps: int, seed: int, threads: int, episodes: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    import gymnasium as gym
    from stable_baselines3 import SAC

    t0 = time.perf_counter()
    model = SAC("MlpPolicy", gym.make(ENV_ID), learning_rate=1e-3, seed=seed, device="cpu", verbose=0)
    model.learn(total_timesteps=steps)
    train_s = time.perf_counter() - t0

    def policy(obs: Any) -> Any:
        return model.predict(obs, deterministic=True)[0]

    return {"train_s": train_s, "steps": steps, **_evaluate(policy, episodes, seed + 10_000)}


def _run_worker(which: str, args: argparse.Namespace) -> dict[str, Any]:
    return run_worker(__file__, which, worker_args(args, "--seed", args.seed))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps each library trains for")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each trainer's process")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--shoal", action="append", default=[], metavar="KEY=VALUE",
                        help="override a shoal SAC setting (repeatable), e.g. --shoal hidden=[256,256]")
    parser.add_argument("--only", choices=["shoal", "sb3"], help="run one side only")
    parser.add_argument("--worker", choices=["shoal", "sb3"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        if args.worker == "shoal":
            res = worker_shoal(args.steps, args.seed, args.threads, args.eval_episodes, args.shoal)
        else:
            res = worker_sb3(args.steps, args.seed, args.threads, args.eval_episodes)
        print(json.dumps(res))
        return

    print(f"SAC on {ENV_ID}, {args.steps} env steps, seed {args.seed}, {args.threads} torch thread(s) per process, "
          f"evaluation {args.eval_episodes} deterministic episodes")
    results = {}
    for which in ("shoal", "sb3"):
        if args.only and which != args.only:
            continue
        r = _run_worker(which, args)
        results[which] = r
        name = "shoal SAC" if which == "shoal" else "SB3 SAC  "
        extra = f", hidden {r['hidden']}" if "hidden" in r else ", hidden [256, 256] (SB3 default)"
        print(f"{name}: train {r['train_s']:7.1f} s ({r['steps'] / r['train_s']:6.1f} steps/s; process "
              f"{r['process_s']:.1f} s)  eval {r['eval_mean']:8.1f} +- {r['eval_std']:.1f}{extra}", flush=True)
    if len(results) == 2:
        ratio = results["shoal"]["train_s"] / results["sb3"]["train_s"]
        verdict = "OK" if ratio <= TARGET_RATIO else "MISSED"
        print(f"time ratio shoal / SB3: {ratio:.2f}x  (target <= {TARGET_RATIO}x: {verdict})")


if __name__ == "__main__":
    main()
