"""Dyna-Q vs Dyna-Q+ on the blocking maze (Sutton & Barto, Figure 8.4): cumulative reward vs env steps.

Trains ``dyna_q`` on ``shoal/BlockingMaze-v0`` through ``shoal.train`` with the shipped per-env
defaults (3,000 steps, alpha 1, gamma 0.95, epsilon 0.1, 10 planning steps, kappa 1e-4), once with
``plus=false`` and once with ``plus=true``, for each seed; draws the mean cumulative reward over the
seeds (shaded: one standard error) and prints the means at the wall's move and at the end as JSON.

The maze pays +1 only when an episode reaches the goal and ends it there, so the cumulative
reward at a step is the number of episodes finished by then, which every metric row records.
``--change-at`` sets the step at which the env's wall moves (and the figure's line): the runs
train on ``gym.make("shoal/BlockingMaze-v0", change_at=...)`` with the shipped settings.

    python benchmarks/dyna_blocking_maze.py --seeds 10 --out docs/img/dyna_blocking_maze.png
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import tempfile
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

import shoal
from shoal.run.resolve import resolve

ENV = "shoal/BlockingMaze-v0"


def blocking_maze(change_at: int) -> Callable[[], gym.Env]:
    """A factory of the blocking maze whose wall moves after ``change_at`` steps."""
    return functools.partial(gym.make, ENV, change_at=change_at)


def shipped_settings() -> dict[str, Any]:
    """Every ``dyna_q`` setting the shipped per-env defaults give ``shoal/BlockingMaze-v0``.

    An env factory gets no per-env defaults (they are keyed by id), so the runs pass them all.
    """
    return dataclasses.asdict(resolve("dyna_q", ENV, ENV, None, {}, {}).agent)


def cumulative_rewards(plus: bool, seeds: int, steps: int, every: int, root: Path,
                       change_at: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``(env steps [N], cumulative reward [seeds, N])`` of Dyna-Q (or Dyna-Q+), read from each run's metric rows."""
    curves = []
    settings = {**shipped_settings(), "plus": plus, "log_every": every, "eval_episodes": 0}
    for seed in range(seeds):
        run = shoal.train("dyna_q", blocking_maze(change_at), steps=steps, seed=seed, run_dir=root / f"plus{int(plus)}_s{seed}",
                          quiet=True, tensorboard=False, overrides=settings)
        rows = [r for r in run.history if "episodes" in r]
        if any(r["episode_return_mean"] != 1.0 for r in rows if r["episodes"]):
            raise SystemExit(f"seed {seed}: an episode ended without reaching the goal; episodes are not the cumulative reward")
        x = np.array([r["env_steps"] for r in rows])
        curves.append(np.array([r["episodes"] for r in rows], float))
    return np.concatenate([[0], x]), np.stack([np.concatenate([[0.0], c]) for c in curves])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--every", type=int, default=10, help="env steps between metric rows (the curve's resolution)")
    p.add_argument("--change-at", type=int, default=1000, help="env steps after which the wall moves (marked on the figure)")
    p.add_argument("--out", type=Path, default=Path("docs/img/dyna_blocking_maze.png"))
    args = p.parse_args()
    if args.seeds < 2:
        raise SystemExit(f"--seeds must be at least 2 for a standard error, got {args.seeds}")

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    result: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for plus, name in ((False, "Dyna-Q"), (True, "Dyna-Q+")):
            x, ys = cumulative_rewards(plus, args.seeds, args.steps, args.every, Path(tmp), args.change_at)
            mean, se = ys.mean(axis=0), ys.std(axis=0, ddof=1) / np.sqrt(len(ys))
            ax.plot(x, mean, label=name)
            ax.fill_between(x, mean - se, mean + se, alpha=0.25)
            at = int(np.searchsorted(x, args.change_at))
            result[name] = {"at_change": float(mean[at]), "final": float(mean[-1]), "final_se": float(se[-1]),
                            "final_per_seed": ys[:, -1].tolist()}
    ax.axvline(args.change_at, color="grey", ls="--", lw=1)
    ax.text(args.change_at + 30, ax.get_ylim()[1] * 0.92, "the wall moves", color="grey")
    ax.set(xlabel="env steps", ylabel="cumulative reward", xlim=(0, args.steps),
           title=f"{ENV}: mean of {args.seeds} seeds (shaded: standard error)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(json.dumps({"env": ENV, "change_at": args.change_at, "seeds": args.seeds, "steps": args.steps, **result}))


if __name__ == "__main__":
    main()
