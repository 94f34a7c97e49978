"""h-DQN vs flat DQN on the stochastic decision process (Kulkarni et al. 2016, Figure 3): greedy return vs env steps.

Trains ``hdqn`` on ``shoal/StochasticDecision-v0`` with the shipped per-env defaults
(``shoal/configs/hdqn.yaml``) and ``dqn`` with the same DQN settings on the same chain with
one-hot observations (``one_hot_stochastic_decision``: flat DQN sees the state as h-DQN's
networks do), through ``shoal.train``, for each seed. Every ``--every`` env steps each run
evaluates its greedy policy (both levels greedy for h-DQN) on ``--eval-episodes`` episodes
(1,000); the figure draws the mean over seeds (shaded: one standard error) and the JSON printed
at the end holds each seed's final evaluation.

    python benchmarks/hdqn_sdp.py --seeds 3 --out docs/img/hdqn_stochastic_decision.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import shoal
from shoal.envs.toy.stochastic_decision import one_hot_stochastic_decision
from shoal.run.resolve import resolve

ENV = "shoal/StochasticDecision-v0"
#: The optimum: right until s6 (reached first with probability 1/5), then left: 0.2 * 1 + 0.8 * 0.01.
OPTIMUM = 0.208


def hdqn_settings() -> dict[str, Any]:
    """Every ``hdqn`` setting the shipped per-env defaults give ``shoal/StochasticDecision-v0``."""
    return dataclasses.asdict(resolve("hdqn", ENV, ENV, None, {}, {}).agent)


def dqn_settings() -> dict[str, Any]:
    """Flat DQN with h-DQN's DQN settings (network, replay, updates, the meta-controller's epsilon schedule).

    The one-hot env is a factory, which gets no per-env defaults: every setting is passed.
    """
    from shoal.agents.dqn.config import DQNConfig

    shared = {f.name for f in dataclasses.fields(DQNConfig)}
    return {k: v for k, v in hdqn_settings().items() if k in shared}


def train_run(algo: str, seed: int, steps: int, every: int, episodes: int, root: Path) -> tuple[list, float]:
    """``([(env steps, greedy return)], final greedy return)`` of one run, each evaluation over ``episodes``."""
    env: Any = ENV if algo == "hdqn" else one_hot_stochastic_decision
    settings = {**(hdqn_settings() if algo == "hdqn" else dqn_settings()), "eval_every": every, "eval_episodes": episodes}
    run = shoal.train(algo, env, steps=steps, seed=seed, run_dir=root / f"{algo}_s{seed}", quiet=True, tensorboard=False,
                      overrides=settings)
    curve = [(int(r["env_steps"]), float(r["eval_return_mean"])) for r in run.history if "eval_return_mean" in r]
    return curve, float(run.eval["mean_return"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=100_000, help="env steps per run (the shipped default of hdqn on the env)")
    p.add_argument("--every", type=int, default=10_000, help="env steps between greedy evaluations")
    p.add_argument("--eval-episodes", type=int, default=1000, help="episodes of each evaluation")
    p.add_argument("--out", type=Path, default=Path("docs/img/hdqn_stochastic_decision.png"))
    args = p.parse_args()
    if args.seeds < 2:
        raise SystemExit(f"--seeds must be at least 2 for a standard error, got {args.seeds}")

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for algo, name in (("hdqn", "h-DQN"), ("dqn", "DQN")):
            runs = [train_run(algo, s, args.steps, args.every, args.eval_episodes, Path(tmp)) for s in range(args.seeds)]
            x = np.array([step for step, _ in runs[0][0]])
            ys = np.array([[r for _, r in curve] for curve, _ in runs])
            mean, se = ys.mean(axis=0), ys.std(axis=0, ddof=1) / np.sqrt(len(ys))
            ax.plot(x, mean, marker="o", ms=3, label=name)
            ax.fill_between(x, mean - se, mean + se, alpha=0.25)
            finals = [f for _, f in runs]
            result[name] = {"final_mean": float(np.mean(finals)), "final_per_seed": finals, "curve_mean": mean.round(4).tolist()}
    ax.axhline(OPTIMUM, color="grey", ls="--", lw=1)
    ax.text(args.steps * 0.02, OPTIMUM + 0.005, "optimum 0.208", color="grey")
    ax.set(xlabel="env steps", ylabel=f"greedy return ({args.eval_episodes} episodes)", xlim=(0, args.steps), ylim=(0, 0.25),
           title=f"{ENV}: mean of {args.seeds} seeds (shaded: standard error)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(json.dumps({"env": ENV, "seeds": args.seeds, "steps": args.steps, "eval_episodes": args.eval_episodes,
                      "curve_steps": x.tolist(), **result}))


if __name__ == "__main__":
    main()
