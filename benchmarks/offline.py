"""Offline RL on recorded datasets: behaviour cloning, CQL and naive offline Q-learning, seed by seed.

    python benchmarks/offline.py cartpole                  # DQN expert, 50 episodes at epsilon 0.3, 3 seeds
    python benchmarks/offline.py pendulum                  # 3k-step SAC expert, 100k steps at action noise 0.5, 3 seeds
    python benchmarks/offline.py cartpole --seeds 0 1 2 3 4 --out docs/img/offline_cartpole.png

Each task trains its expert once (seed 0), records its dataset with ``shoal record``'s
code (the same episodes for every seed), then trains BC, CQL and the naive offline learner
on it for every seed and evaluates each greedily over ``--eval-episodes`` seeded episodes.
It prints the dataset's mean return, one row per algorithm (mean, std and each seed's
return) and draws the per-seed returns beside the dataset's mean into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Per task: the env, its expert, the recording, the offline algorithms and their settings.
TASKS: dict[str, dict[str, Any]] = {
    "cartpole": {"env": "CartPole-v1", "expert": "dqn", "expert_steps": 10_000, "episodes": 50,
                 "record": {"epsilon": 0.3}, "naive": "offline_dqn", "updates": None},
    "pendulum": {"env": "Pendulum-v1", "expert": "sac", "expert_steps": 3_000, "episodes": 500,
                 "record": {"action_noise": 0.5}, "naive": "offline_sac", "updates": None},
}


def run_task(name: str, seeds: list[int], eval_episodes: int, root: Path, updates: int | None = None,
             expert_steps: int | None = None) -> dict[str, Any]:
    """Train the expert, record the dataset, train and evaluate the three offline learners per seed."""
    import shoal
    from shoal.run.offline import train_offline
    from shoal.run.record import record_dataset

    task = TASKS[name]
    os.environ["MINARI_DATASETS_PATH"] = str(root / "datasets")
    t0 = time.perf_counter()
    expert = shoal.train(task["expert"], env=task["env"], steps=expert_steps or task["expert_steps"], seed=0,
                         run_dir=root / "expert", tensorboard=False, overrides={"eval_episodes": eval_episodes})
    rec = record_dataset(expert.run_dir, task["episodes"], str(root / "dataset"), seed=1, **task["record"])
    out: dict[str, Any] = {"task": name, "env": task["env"], "expert_eval": expert.eval["mean_return"] if expert.eval else None,
                           "dataset_mean": statistics.fmean(rec.returns), "dataset_steps": rec.steps,
                           "record": task["record"], "episodes": task["episodes"], "seeds": seeds, "returns": {}}
    print(f"{name}: expert {task['expert']} eval {out['expert_eval']:.1f}; dataset {rec.steps} steps, "
          f"mean return {out['dataset_mean']:.1f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    for algo in ("bc", "cql", task["naive"]):
        out["returns"][algo] = []
        for seed in seeds:
            t = time.perf_counter()
            run = train_offline(algo, root / "dataset", steps=updates or task["updates"], seed=seed,  # None: per env
                                run_dir=root / f"{algo}_s{seed}", tensorboard=False,
                                overrides={"eval_episodes": eval_episodes})
            assert run.eval is not None
            out["returns"][algo].append(run.eval["mean_return"])
            print(f"  {algo:<12} seed {seed}: eval {run.eval['mean_return']:8.1f} ({time.perf_counter() - t:.0f} s)",
                  flush=True)
    return out


def summarize(res: dict[str, Any]) -> None:
    """One row per algorithm: mean and std over seeds, and each seed's return."""
    print(f"\n{res['task']} ({res['env']}, {res['episodes']} episodes, {res['record']}): dataset mean return "
          f"{res['dataset_mean']:.1f}, expert {res['expert_eval']:.1f}")
    for algo, rs in res["returns"].items():
        sd = statistics.pstdev(rs) if len(rs) > 1 else 0.0
        print(f"  {algo:<12} mean {statistics.fmean(rs):8.1f} +- {sd:6.1f}   seeds: {' '.join(f'{r:.1f}' for r in rs)}")


def plot(results: list[dict[str, Any]], out: Path) -> None:
    """Per-seed returns of each algorithm (dots), their mean (bar) and the dataset's mean return (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, res in zip(axes[0], results):
        algos = list(res["returns"])
        means = [statistics.fmean(res["returns"][a]) for a in algos]
        ax.bar(range(len(algos)), means, color=["#8da0cb", "#66c2a5", "#fc8d62"][:len(algos)], alpha=0.6)
        for i, a in enumerate(algos):
            ax.scatter([i] * len(res["returns"][a]), res["returns"][a], color="k", s=14, zorder=3)
        ax.axhline(res["dataset_mean"], ls="--", color="grey", label=f"dataset mean ({res['dataset_mean']:.0f})")
        ax.set_xticks(range(len(algos)), algos)
        ax.set_ylabel("greedy evaluation return")
        ax.set_title(f"{res['env']}: {res['episodes']} episodes, {res['record']}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="+", choices=sorted(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--updates", type=int, help="learner updates per offline run (default: the task's)")
    parser.add_argument("--expert-steps", type=int, help="env steps of the expert (default: the task's)")
    parser.add_argument("--out", default="", help="PNG to draw (default: none)")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument("--plot-json", default="", help="draw --out from the results of an earlier --json, run nothing")
    args = parser.parse_args(argv)
    if args.plot_json:
        results = [r for r in json.loads(Path(args.plot_json).read_text()) if r["task"] in args.tasks]
        for res in results:
            summarize(res)
        if args.out:
            plot(results, Path(args.out))
        return
    results = []
    for name in args.tasks:
        with tempfile.TemporaryDirectory() as tmp:
            res = run_task(name, args.seeds, args.eval_episodes, Path(tmp), args.updates, args.expert_steps)
        summarize(res)
        results.append(res)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    if args.out:
        plot(results, Path(args.out))


if __name__ == "__main__":
    main()
