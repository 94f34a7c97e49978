"""Plots of multi-seed experiments: the mean curve of each with a 95% bootstrap band over seeds."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from shoal.errors import ShoalError
from shoal.io.checkpoint import atomic_write_bytes
from shoal.run.experiments import Experiment, is_experiment, load_experiment
from shoal.run.stats import bootstrap_mean_band, common_grid, on_grid, seed_curves


def experiment_legend(exp: Experiment) -> str:
    """An experiment's legend entry: its label, the seeds drawn, and how many failed or are missing."""
    missing = f" ({exp.missing_note()})" if exp.failed else ""
    return f"{exp.label}, {len(exp.runs)} seeds{missing}"


def plot_experiments(paths: Sequence[Path], out: Path, x: str = "env_steps", y: str = "episode_return_mean",
                     title: str | None = None, ymin: float | None = None, ymax: float | None = None,
                     points: int = 100, reps: int = 2000, ci: float = 0.95, seed: int = 0) -> Path:
    """One mean curve per experiment folder with its ``ci`` bootstrap band over seeds; a PNG, written atomically.

    Each experiment's seeds are put on a common grid of ``points`` steps (the steps all its
    seeds cover); the band resamples seeds ``reps`` times with a generator seeded by ``seed``.
    A plain run directory among ``paths`` is drawn as a single line. An experiment with failed or
    missing seeds says so in its legend entry ("k of n seeds failed or missing").
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shoal.run.plots import _label, read_metrics

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for p in paths:
        if not is_experiment(p):
            cols = read_metrics(p)
            if x not in cols or y not in cols:
                raise ShoalError(f"{p}/metrics.csv has no column {x if x not in cols else y!r}; columns: {', '.join(cols)}")
            xa, ya = np.asarray(cols[x]), np.asarray(cols[y])
            keep = ~(np.isnan(xa) | np.isnan(ya))
            ax.plot(xa[keep], ya[keep], label=_label(p), linewidth=1.5)
            continue
        exp = load_experiment(p)
        curves = seed_curves(exp, x, y)
        grid = common_grid([c[0] for c in curves], points)
        values = np.stack([on_grid(cx, cy, grid) for cx, cy in curves])
        mean, low, high = bootstrap_mean_band(values, reps, ci, seed)
        line, = ax.plot(grid, mean, linewidth=1.8, label=experiment_legend(exp))
        ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.25, linewidth=0)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title=f"mean over seeds, {100 * ci:g}% bootstrap CI", title_fontsize=8)
    if title:
        ax.set_title(title)
    if ymin is not None or ymax is not None:
        ax.set_ylim(ymin, ymax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(Path(out), buf.getvalue())
    return Path(out)
