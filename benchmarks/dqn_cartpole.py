"""DQN on CartPole-v1, time until an evaluation reaches 475: shoal against Stable-Baselines3.

    python benchmarks/dqn_cartpole.py                      # seed 0
    python benchmarks/dqn_cartpole.py --seeds 0 1 2 3 4    # the median over 5 seeds
    python benchmarks/dqn_cartpole.py --shoal double=false # shoal with an override
    python benchmarks/dqn_cartpole.py --merge a.json b.json   # summarise seeds run as separate --json invocations

Per seed, shoal and SB3 run one after the other (interleaved, so machine load hits both
alike), each in a fresh process with the same torch thread count. Both evaluate every
``--eval-every`` env steps (2,048: a whole number of shoal iterations, so both evaluate
at exactly the same steps) on ``--eval-episodes`` deterministic episodes, one per env
copy, and stop at the first evaluation with mean return >= 475.

- shoal: ``shoal.train("dqn", env="CartPole-v1")`` with its shipped CartPole defaults
  (``shoal/configs/dqn.yaml``, including its step budget) and RunConfig's ``eval_every``,
  ``eval_episodes`` and ``target_return``; checkpoints and metrics are written as usual.
- SB3: ``DQN("MlpPolicy")`` with rl-zoo's CartPole-v1 hyperparameters
  (``shoal.bench.peers.RL_ZOO_DQN_CARTPOLE``) and ``EvalCallback`` +
  ``StopTrainingOnRewardThreshold``; its budget is ``--sb3-budget`` (default: the same as shoal's).

Timed, the same way on both sides: ``time`` runs from just before the agent is built
(``shoal.train`` / ``DQN(...)``) until training stops, evaluations included, imports
excluded; ``process`` is the whole subprocess, imports included. The target is on the
ratio of the median ``time``s. Needs ``pip install 'shoal[bench]'`` for the SB3 side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Timer, limit_threads, merge_results, run_worker  # noqa: E402

ENV_ID = "CartPole-v1"
TARGET_RETURN = 475.0
TARGET_RATIO = 0.3


def shoal_budget() -> int:
    """shoal's default CartPole DQN step budget (``shoal/configs/dqn.yaml``)."""
    from shoal.agents import registry

    return int(registry.get("dqn").defaults(ENV_ID)["steps"])


def worker_shoal(seed: int, threads: int, eval_every: int, episodes: int, overrides: list[str]) -> dict[str, Any]:
    limit_threads(threads)
    import shoal
    from shoal.config import parse_overrides

    with tempfile.TemporaryDirectory() as tmp:
        with Timer() as t:
            run = shoal.train("dqn", env=ENV_ID, seed=seed, run_dir=Path(tmp) / "run", tensorboard=False,
                              overrides={"eval_every": eval_every, "eval_episodes": episodes,
                                         "target_return": TARGET_RETURN, "torch_threads": threads,
                                         **parse_overrides(overrides)})
    evals = [r for r in run.history if "eval_return_mean" in r]
    eval_mean = run.eval["mean_return"] if run.eval else float("nan")
    return {"train_s": t.wall_s, "cpu_s": t.cpu_s, "steps": run.env_steps, "eval_mean": eval_mean, "evaluations": len(evals),
            "solved": eval_mean >= TARGET_RETURN}


def worker_sb3(seed: int, threads: int, eval_every: int, episodes: int, budget: int) -> dict[str, Any]:
    limit_threads(threads)
    from shoal.bench.peers import sb3_dqn_to_target

    return sb3_dqn_to_target(ENV_ID, seed, budget, eval_every, episodes, TARGET_RETURN)


def _line(name: str, r: dict[str, Any]) -> str:
    solved = f"reached {TARGET_RETURN:.0f}" if r["solved"] else f"NOT reached {TARGET_RETURN:.0f}"
    return (f"{name}: time {r['train_s']:6.1f} s, cpu {r['cpu_s']:6.1f} s (process {r['process_s']:5.1f} s, "
            f"cpu {r['process_cpu_s']:5.1f} s)  {r['steps']:6d} env steps  "
            f"last eval {r['eval_mean']:6.1f} after {r['evaluations']} evaluations  {solved}")


def summarize(results: dict[str, list[dict[str, Any]]]) -> None:
    """Print the medians over seeds and the shoal / SB3 ratio of the median times."""
    for which in ("shoal", "sb3"):
        rs = results[which]
        if rs:
            print(f"{which}: median time {statistics.median(r['train_s'] for r in rs):.1f} s, median cpu "
                  f"{statistics.median(r['cpu_s'] for r in rs):.1f} s, median process "
                  f"{statistics.median(r['process_s'] for r in rs):.1f} s, reached {TARGET_RETURN:.0f} on "
                  f"{sum(r['solved'] for r in rs)} of {len(rs)} seeds")
    if results["shoal"] and results["sb3"]:
        med = {w: statistics.median(r["train_s"] for r in results[w]) for w in results}
        medp = {w: statistics.median(r["process_s"] for r in results[w]) for w in results}
        medc = {w: statistics.median(r["cpu_s"] for r in results[w]) for w in results}
        ratio = med["shoal"] / med["sb3"]
        solved = sum(r["solved"] for r in results["shoal"])
        ok = ratio <= TARGET_RATIO and solved == len(results["shoal"])
        print(f"median-time ratio shoal / SB3: {ratio:.3f}x (cpu time: {medc['shoal'] / medc['sb3']:.3f}x; "
              f"whole process: {medp['shoal'] / medp['sb3']:.3f}x); "
              f"target <= {TARGET_RATIO}x with every shoal seed reaching {TARGET_RETURN:.0f}: "
              f"{'OK' if ok else 'MISSED'}")
        if not all(r["solved"] for r in results["sb3"]):
            print("note: an SB3 seed that did not reach the target is timed over its whole budget, which "
                  "understates SB3's time to the target")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each trainer's process")
    parser.add_argument("--eval-every", type=int, default=2048, help="env steps between evaluations (both sides)")
    parser.add_argument("--eval-episodes", type=int, default=20, help="episodes per evaluation (both sides)")
    parser.add_argument("--sb3-budget", type=int, default=0, help="SB3's step budget (0: shoal's default budget)")
    parser.add_argument("--shoal", action="append", default=[], metavar="KEY=VALUE",
                        help="override a shoal DQN or run setting (repeatable), e.g. --shoal double=false")
    parser.add_argument("--only", choices=["shoal", "sb3"], help="run one side only")
    parser.add_argument("--worker", choices=["shoal", "sb3"], help=argparse.SUPPRESS)
    parser.add_argument("--json", default="", help="also write the per-seed results here")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="summarise the --json files of several runs")
    args = parser.parse_args(argv)
    if args.merge:
        summarize(merge_results(args.merge))
        return
    budget = args.sb3_budget or shoal_budget()

    if args.worker:
        seed = args.seeds[0]
        if args.worker == "shoal":
            res = worker_shoal(seed, args.threads, args.eval_every, args.eval_episodes, args.shoal)
        else:
            res = worker_sb3(seed, args.threads, args.eval_every, args.eval_episodes, budget)
        print(json.dumps(res))
        return

    print(f"DQN on {ENV_ID}: time until an evaluation's mean return >= {TARGET_RETURN:.0f}; seeds {args.seeds}; "
          f"{args.threads} torch thread(s) per process; both evaluate every {args.eval_every} env steps on "
          f"{args.eval_episodes} deterministic episodes (one per env copy).\n"
          f"  shoal: shipped defaults (shoal/configs/dqn.yaml), budget {shoal_budget()} steps"
          f"{', overrides ' + ' '.join(args.shoal) if args.shoal else ''}\n"
          f"  SB3:   rl-zoo hyperparameters (lr 2.3e-3, batch 64, train_freq 256, gradient_steps 128, "
          f"target_update_interval 10, net [256, 256]), budget {budget} steps\n"
          f"  time = wall-clock from agent construction to stop, evaluations included, imports excluded (the same "
          f"span on both sides); cpu = CPU time (all threads) of that span, less sensitive to other load on a "
          f"shared machine; process = the whole subprocess", flush=True)
    results: dict[str, list[dict[str, Any]]] = {"shoal": [], "sb3": []}
    common = ["--threads", str(args.threads), "--eval-every", str(args.eval_every),
              "--eval-episodes", str(args.eval_episodes), "--sb3-budget", str(budget)]
    for o in args.shoal:
        common += ["--shoal", o]
    for seed in args.seeds:
        for which in ("shoal", "sb3"):
            if args.only and which != args.only:
                continue
            r = run_worker(__file__, which, ["--seeds", str(seed), *common])
            r["seed"] = seed
            results[which].append(r)
            if args.json:  # after every run, so an interrupted benchmark keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=2))
            print(f"seed {seed} " + _line("shoal DQN" if which == "shoal" else "SB3 DQN  ", r), flush=True)
        if not args.only:
            s, b = results["shoal"][-1], results["sb3"][-1]
            print(f"seed {seed} ratio shoal / SB3: time {s['train_s'] / b['train_s']:.3f}x, "
                  f"cpu {s['cpu_s'] / b['cpu_s']:.3f}x, process {s['process_s'] / b['process_s']:.3f}x", flush=True)
    summarize(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
