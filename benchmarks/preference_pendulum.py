"""SAC on a reward learned from preferences against SAC on the true reward, on Pendulum-v1.

Per seed it trains ``pref_sac`` (the shipped defaults: 50k steps, at most 1,000 oracle labels) and
``sac`` on the env's reward for the same steps. Both curves are true returns: the mean over the last
100 training episodes as the run logs it, and the runner's final greedy evaluation (20 episodes).
Then the final reward model of the first seed is loaded from its checkpoint and scored on fresh
segments from its recent experience: learned against true segment returns. It prints every number
it plots and writes the figure.

    python benchmarks/preference_pendulum.py --seeds 0 1 2 --out docs/img/preference_pendulum.png

With ``--runs-dir DIR`` runs go to ``DIR/<algo>_s<seed>``, and a finished run found there (one with
an ``eval.json``) is read instead of trained again.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import shoal

ENV = "shoal/Pendulum-v1"


def train(algo: str, seed: int, steps: int, run_dir: Path) -> None:
    """One run of ``algo`` with its shipped defaults for ``steps`` steps, into ``run_dir``."""
    shoal.train(algo, ENV, steps=steps, seed=seed, run_dir=run_dir, quiet=True, tensorboard=False)


def read_run(run_dir: Path) -> dict[str, Any]:
    """A finished run's training curve (true returns), final evaluation, wall time and last reward-model metrics."""
    import csv
    import json

    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    num = lambda r, k: float(r[k]) if r.get(k) not in (None, "") else float("nan")  # noqa: E731
    curve = [(int(r["env_steps"]), num(r, "episode_return_mean")) for r in rows
             if not np.isnan(num(r, "episode_return_mean"))]
    pref = [r for r in rows if not np.isnan(num(r, "reward_corr"))]
    last = {k: num(pref[-1], k) for k in ("labels", "reward_model_accuracy", "reward_corr",
                                           "reward_heldout_accuracy")} if pref else {}
    done = run_dir / "eval.json"
    final = json.loads(done.read_text())["mean_return"] if done.exists() else float("nan")  # nan: unfinished
    wall = max(num(r, "wall_time_s") for r in rows)
    return {"curve": curve, "final": float(final), "wall_s": wall, "pref": last, "run_dir": run_dir,
            "steps": curve[-1][0]}


def segment_returns(run_dir: Path, n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learned (ensemble mean) and true returns of ``n`` fresh segments from a pref_sac run's final reward model."""
    import yaml

    from shoal.agents.preference.trainer import segment_returns as model_returns
    from shoal.envs.make import env_spec
    from shoal.io.checkpoint import load_newest_checkpoint
    from shoal.topologies.nodes import NodeContext

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    ctx = NodeContext("pref_sac", cfg["agent"], ENV, env_spec(ENV), int(cfg["run"]["steps"]), int(cfg["run"]["seed"]))
    model = ctx.builder().make_reward_model()  # type: ignore[attr-defined]
    _, tree, _ = load_newest_checkpoint(run_dir / "checkpoints")
    model.load_state(tree["program"]["learner"]["reward_model"])
    segs = model.buffer.sample(n, model.cfg.segment_length, np.random.default_rng(seed))
    assert segs is not None
    return model_returns(model.ensemble, segs).mean(0).detach().numpy(), segs.true_return


def plot(results: dict[str, list[dict[str, Any]]], learned: np.ndarray, true: np.ndarray, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for algo, label, color in (("pref_sac", "SAC on the learned reward", "tab:blue"),
                               ("sac", "SAC on the true reward", "tab:gray")):
        for i, r in enumerate(results[algo]):
            xs, ys = zip(*r["curve"])
            a.plot(xs, ys, color=color, alpha=0.8, label=label if i == 0 else None)
            a.scatter([r["steps"]], [r["final"]], color=color, marker="*", s=80, zorder=3,
                      label="final greedy evaluation" if i == 0 and algo == "sac" else None)
    a.axhline(-300, color="tab:red", ls="--", lw=1, label="-300")
    a.set_xlabel("env steps")
    a.set_ylabel("true return (last 100 training episodes)")
    a.set_title("Pendulum-v1: return on the true reward")
    a.legend(loc="lower right")
    # The learned reward is defined up to shift and scale: fit both for the picture, report the correlation.
    slope, icept = np.polyfit(learned, true, 1)
    b.scatter(learned, true, s=6, alpha=0.5)
    line_x = np.linspace(learned.min(), learned.max(), 2)
    b.plot(line_x, slope * line_x + icept, color="tab:red", lw=1)
    b.set_xlabel("learned segment return (ensemble mean, unnormalised)")
    b.set_ylabel("true segment return")
    b.set_title(f"fresh segments, final reward model: r = {np.corrcoef(learned, true)[0, 1]:.3f}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--runs-dir", type=Path, default=None, help="where runs go (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=Path("docs/img/preference_pendulum.png"))
    ap.add_argument("--no-train", action="store_true", help="only read the runs in --runs-dir, finished or not")
    args = ap.parse_args()
    results: dict[str, list[dict[str, Any]]] = {"pref_sac": [], "sac": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.runs_dir or Path(tmp)
        for seed in args.seeds:
            for algo in ("pref_sac", "sac"):
                run_dir = root / f"{algo}_s{seed}"
                if not args.no_train and not (run_dir / "eval.json").exists():
                    train(algo, seed, args.steps, run_dir)
                r = read_run(run_dir)
                results[algo].append(r)
                curve = ", ".join(f"{s // 1000}k {v:.0f}" for s, v in r["curve"][:: max(1, len(r["curve"]) // 10)])
                extra = ""
                if r["pref"]:
                    p = r["pref"]
                    extra = (f" | labels {p['labels']:.0f}, reward-model accuracy {p['reward_model_accuracy']:.3f}, "
                             f"held-out correlation {p['reward_corr']:.3f}, held-out pair accuracy "
                             f"{p['reward_heldout_accuracy']:.3f}")
                print(f"{algo:8s} seed {seed}: final greedy {r['final']:7.1f} after {r['steps']} steps in "
                      f"{r['wall_s']:5.0f} s | training returns {curve}{extra}", flush=True)
        learned, true = segment_returns(results["pref_sac"][0]["run_dir"])
    corr = float(np.corrcoef(learned, true)[0, 1])
    print()
    for algo in ("pref_sac", "sac"):
        finals = [r["final"] for r in results[algo]]
        print(f"{algo:8s}: final true return per seed {[round(f, 1) for f in finals]}, median "
              f"{statistics.median(finals):.1f}, >= -300 in {sum(f >= -300 for f in finals)}/{len(finals)}")
    print(f"final reward model (seed {args.seeds[0]}): learned vs true return of {len(true)} fresh segments, "
          f"correlation {corr:.3f}")
    plot(results, learned, true, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
