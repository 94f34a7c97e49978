"""Statistics over seeds: bootstrap bands for learning curves, and final-return tables with rliable.

Curves: every seed's curve is interpolated onto one step grid (the steps all seeds cover),
and at each grid step the mean over seeds gets a percentile bootstrap interval from
resampling the seeds with replacement. Final returns: mean, median, interquartile mean (IQM)
and stratified-bootstrap intervals from rliable (Agarwal et al., 2021), seeds being the runs
of a single task.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shoal.errors import ConfigError, ShoalError
from shoal.run.experiments import Experiment


def _rliable() -> Any:
    try:
        from rliable import library, metrics
    except ImportError:
        raise ConfigError("shoal report needs rliable, which is not installed; run pip install 'shoal[stats]'") from None
    return library, metrics


def common_grid(xs: Sequence[np.ndarray], points: int = 100) -> np.ndarray:
    """``points`` evenly spaced steps from the latest first step to the earliest last step of ``xs``."""
    if not xs or any(len(x) == 0 for x in xs):
        raise ShoalError("a seed has no logged points to plot; check that its metrics.csv has rows")
    lo, hi = max(float(x[0]) for x in xs), min(float(x[-1]) for x in xs)
    if hi < lo:
        raise ShoalError(f"the seeds' curves do not overlap (one ends at step {hi:g} before another starts at {lo:g}); "
                         "compare runs of similar length")
    return np.linspace(lo, hi, points) if hi > lo else np.array([lo])


def on_grid(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``y(x)`` linearly interpolated at ``grid``, blank (NaN) points dropped first."""
    keep = ~(np.isnan(x) | np.isnan(y))
    return np.interp(grid, x[keep], y[keep])


def bootstrap_mean_band(values: np.ndarray, reps: int = 2000, ci: float = 0.95,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, low, high)`` over the seeds (rows) of ``values`` ``[seeds, points]``, at every point.

    ``low``/``high`` are the ``(1 - ci) / 2`` and ``(1 + ci) / 2`` percentiles of the mean over
    ``reps`` resamples of the seeds with replacement (the same resample at every point, so the
    band is that of whole curves), drawn from a generator seeded with ``seed``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ShoalError(f"need curves as [seeds, points], got shape {values.shape}")
    n = values.shape[0]
    idx = np.random.default_rng(seed).integers(0, n, size=(reps, n))
    means = values[idx].mean(axis=1)  # [reps, points]
    low, high = np.percentile(means, [50 * (1 - ci), 50 * (1 + ci)], axis=0)
    return values.mean(axis=0), low, high


def seed_curves(exp: Experiment, x: str, y: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(x, y)`` of every seed of ``exp`` from its metrics.csv, blanks in ``y`` dropped."""
    from shoal.run.plots import read_metrics

    out = []
    for seed, d in exp.runs.items():
        cols = read_metrics(d)
        if x not in cols or y not in cols:
            raise ShoalError(f"{d}/metrics.csv has no column {x if x not in cols else y!r}; columns: {', '.join(cols)}")
        xa, ya = np.asarray(cols[x]), np.asarray(cols[y])
        keep = ~(np.isnan(xa) | np.isnan(ya))
        if not keep.any():
            raise ShoalError(f"{d}/metrics.csv has no value of {y!r} (seed {seed}); pick another --y")
        out.append((xa[keep], ya[keep]))
    return out


def final_returns(exp: Experiment) -> dict[int, float]:
    """Each seed's final evaluation mean return, from its run directory's eval.json."""
    out = {}
    for seed, d in exp.runs.items():
        path = d / "eval.json"
        if not path.exists():
            raise ShoalError(f"{path} does not exist (seed {seed} ran without a final evaluation); "
                             "train with eval_episodes > 0 to report final returns")
        out[seed] = float(json.loads(path.read_text())["mean_return"])
    return out


def _aggregates(scores: np.ndarray) -> np.ndarray:
    """``[mean, median, IQM]`` of a ``[runs, tasks]`` score matrix (rliable's estimators)."""
    _, metrics = _rliable()
    # rliable's aggregate_median is the median over tasks of per-task means: with one task it
    # is the mean, so the median here is over the runs (seeds) themselves.
    return np.array([metrics.aggregate_mean(scores), float(np.median(scores)), metrics.aggregate_iqm(scores)])


STATISTICS = ("mean", "median", "iqm")


def summarize(scores: dict[str, Sequence[float]], reps: int = 2000, ci: float = 0.95,
              seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per name: number of seeds, mean, median, IQM and their stratified-bootstrap ``ci`` intervals.

    The intervals come from ``rliable.library.get_interval_estimates`` (percentile method,
    ``reps`` resamples of the seeds, numpy's global generator seeded with ``seed`` for each name
    on its own, so a name's interval does not depend on the others in the table, and restored
    after the call).
    """
    library, _ = _rliable()
    matrices = {k: np.asarray(v, dtype=np.float64).reshape(-1, 1) for k, v in scores.items()}
    # rliable's stratified bootstrap draws its resamples from numpy's global generator (np.random.choice),
    # whatever random_state says: seed that generator for each name and give the caller's state back.
    state = np.random.get_state()
    points: dict[str, Any] = {}
    intervals: dict[str, Any] = {}
    try:
        for k, m in matrices.items():
            np.random.seed(seed)
            with warnings.catch_warnings():  # arch's notice that rliable hands it a RandomState
                warnings.simplefilter("ignore", FutureWarning)
                p, i = library.get_interval_estimates({k: m}, _aggregates, reps=reps, confidence_interval_size=ci,
                                                      random_state=np.random.RandomState(seed))
            points[k], intervals[k] = p[k], i[k]
    finally:
        np.random.set_state(state)
    out: dict[str, dict[str, Any]] = {}
    for k, m in matrices.items():
        row: dict[str, Any] = {"seeds": int(m.shape[0])}
        for j, stat in enumerate(STATISTICS):
            row[stat] = float(points[k][j])
            row[f"{stat}_ci"] = [float(intervals[k][0][j]), float(intervals[k][1][j])]
        out[k] = row
    return out


def experiment_report(paths: Sequence[str | Path], reps: int = 2000, ci: float = 0.95,
                      seed: int = 0) -> dict[str, dict[str, Any]]:
    """The final-return table of the experiments in ``paths``, keyed by folder, with the per-seed returns.

    Each row also says how many seeds the experiment listed and which failed or are missing.
    """
    from shoal.run.experiments import load_experiment

    exps = [load_experiment(p) for p in paths]
    finals = {str(e.path): final_returns(e) for e in exps}
    table = summarize({k: list(v.values()) for k, v in finals.items()}, reps, ci, seed)
    for e in exps:
        row = table[str(e.path)]
        row.update({"algo": e.algo, "env": e.env, "returns": {str(s): r for s, r in finals[str(e.path)].items()},
                    "listed": e.listed, "failed": {str(s): why for s, why in e.failed.items()}})
    return table


def format_report(table: dict[str, dict[str, Any]], ci: float = 0.95) -> str:
    """The table as aligned text: one row per experiment, each statistic with its interval."""
    def cell(row: dict[str, Any], stat: str) -> str:
        lo, hi = row[f"{stat}_ci"]
        return f"{row[stat]:.2f} [{lo:.2f}, {hi:.2f}]"

    pct = f"{100 * ci:g}%"
    head = ["experiment", "algo", "env", "seeds", *(f"{s} [{pct} CI]" for s in ("mean", "median", "IQM"))]
    rows = [[k, r["algo"], r["env"], str(r["seeds"]), *(cell(r, s) for s in STATISTICS)] for k, r in table.items()]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    note = ("final return: each seed's final evaluation (eval.json); intervals: stratified bootstrap over seeds "
            "(rliable)")
    if any(r["seeds"] < 3 for r in table.values()):
        note += "; fewer than 3 seeds give degenerate intervals"
    for k, r in table.items():
        if r.get("failed"):
            note += (f"; {k}: {len(r['failed'])} of {r['listed']} seeds failed or missing "
                     f"({' '.join(sorted(r['failed'], key=int))}), not counted")
    return "\n".join([*lines, note])
