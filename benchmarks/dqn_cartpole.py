"""shoal DQN against Stable-Baselines3 DQN on CartPole-v1, trained one after the other in one run.

    python benchmarks/dqn_cartpole.py                 # 50k steps each, seed 0
    python benchmarks/dqn_cartpole.py --seeds 0 1 2   # several seeds, then the mean ratio
    python benchmarks/dqn_cartpole.py --shoal double=false   # shoal with an override

Each trainer runs in a fresh subprocess with the same torch thread count (1 by default,
the fastest for small nets on few cores). shoal runs ``shoal.train("dqn", env="CartPole-v1",
steps=N)`` with its shipped CartPole defaults (``shoal/configs/dqn.yaml``) plus any
``--shoal key=value`` overrides. SB3 runs ``DQN("MlpPolicy")`` with rl-zoo's CartPole-v1
hyperparameters (hyperparams/dqn.yml): lr 2.3e-3, batch 64, buffer 100k, learning_starts
1000, gamma 0.99, target_update_interval 10, train_freq 256, gradient_steps 128,
exploration_fraction 0.16, exploration_final_eps 0.04, net_arch [256, 256].
The timed span (time.perf_counter) is building the agent plus training; evaluation is
excluded. Both are then evaluated by the same code: deterministic actions on the same
seeded episodes. Needs ``pip install 'shoal[bench]'`` for the SB3 side.
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

ENV_ID = "CartPole-v1"
TARGET_RATIO = 0.5
RL_ZOO = {"learning_rate": 2.3e-3, "batch_size": 64, "buffer_size": 100_000, "learning_starts": 1000, "gamma": 0.99,
          "target_update_interval": 10, "train_freq": 256, "gradient_steps": 128, "exploration_fraction": 0.16,
          "exploration_final_eps": 0.04}
RL_ZOO_NET = [256, 256]


def _evaluate(policy: Any, episodes: int, seed: int) -> dict[str, float]:
    from shoal.run.evaluate import evaluate

    r = evaluate(policy, ENV_ID, episodes, seed)
    return {"eval_mean": r["mean_return"], "eval_std": r["std_return"]}


def worker_shoal(steps: int, seed: int, threads: int, episodes: int, overrides: list[str]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    import shoal
    from shoal.config import parse_overrides
    from shoal.run.reload import load_policy

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = shoal.train("dqn", env=ENV_ID, steps=steps, seed=seed, run_dir=Path(tmp) / "run", tensorboard=False,
                          overrides={"eval_episodes": 0, "torch_threads": threads, **parse_overrides(overrides)})
        train_s = time.perf_counter() - t0
        policy, cfg, _ = load_policy(run.run_dir)
        agent = cfg["agent"]
        flags = [f for f in ("double", "dueling", "prioritized") if agent[f]] + [f"n_step={agent['n_step']}"]
        return {"train_s": train_s, "steps": run.env_steps, "hidden": agent["hidden"], "flags": flags,
                **_evaluate(policy, episodes, seed + 10_000)}


def worker_sb3(steps: int, seed: int, threads: int, episodes: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    from stable_baselines3 import DQN

    t0 = time.perf_counter()
    model = DQN("MlpPolicy", ENV_ID, policy_kwargs={"net_arch": RL_ZOO_NET}, seed=seed, device="cpu", verbose=0,
                **RL_ZOO)
    model.learn(total_timesteps=steps)
    train_s = time.perf_counter() - t0

    def policy(obs: Any) -> Any:
        return model.predict(obs, deterministic=True)[0]

    return {"train_s": train_s, "steps": steps, **_evaluate(policy, episodes, seed + 10_000)}


def _run_worker(which: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    return run_worker(__file__, which, worker_args(args, "--seeds", seed))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000, help="env steps each library trains for")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each trainer's process")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--shoal", action="append", default=[], metavar="KEY=VALUE",
                        help="override a shoal DQN setting (repeatable), e.g. --shoal double=false")
    parser.add_argument("--only", choices=["shoal", "sb3"], help="run one side only")
    parser.add_argument("--worker", choices=["shoal", "sb3"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        seed = args.seeds[0]
        if args.worker == "shoal":
            res = worker_shoal(args.steps, seed, args.threads, args.eval_episodes, args.shoal)
        else:
            res = worker_sb3(args.steps, seed, args.threads, args.eval_episodes)
        print(json.dumps(res))
        return

    print(f"DQN on {ENV_ID}, {args.steps} env steps, seeds {args.seeds}, {args.threads} torch thread(s) per process, "
          f"evaluation {args.eval_episodes} deterministic episodes", flush=True)
    times: dict[str, list[float]] = {"shoal": [], "sb3": []}
    for seed in args.seeds:
        for which in ("shoal", "sb3"):
            if args.only and which != args.only:
                continue
            r = _run_worker(which, seed, args)
            times[which].append(r["train_s"])
            if which == "shoal":
                name, extra = "shoal DQN", f"hidden {r['hidden']}, {' '.join(r['flags'])}"
            else:
                name, extra = "SB3 DQN  ", f"hidden {RL_ZOO_NET}, rl-zoo hyperparameters"
            print(f"seed {seed} {name}: train {r['train_s']:6.1f} s ({r['steps'] / r['train_s']:6.0f} steps/s; "
                  f"process {r['process_s']:.1f} s)  eval {r['eval_mean']:6.1f} +- {r['eval_std']:.1f}  ({extra})",
                  flush=True)
        if times["shoal"] and times["sb3"] and len(times["shoal"]) == len(times["sb3"]):
            print(f"seed {seed} time ratio shoal / SB3: {times['shoal'][-1] / times['sb3'][-1]:.2f}x", flush=True)
    if times["shoal"] and times["sb3"]:
        ratio = sum(times["shoal"]) / sum(times["sb3"])
        verdict = "OK" if ratio <= TARGET_RATIO else "MISSED"
        print(f"time ratio shoal / SB3 (total over {len(args.seeds)} seed(s)): {ratio:.2f}x  "
              f"(target <= {TARGET_RATIO}x: {verdict})")


if __name__ == "__main__":
    main()
