"""Learning-curve plots from run directories' ``metrics.csv``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from shoal.errors import ShoalError
from shoal.io.checkpoint import atomic_write_bytes


def read_metrics(run_dir: Path) -> dict[str, list[float]]:
    """Columns of a run's metrics.csv as float lists (blank cells become NaN)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        raise ShoalError(f"{path} does not exist; pass run directories written by `shoal train`")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            try:
                cols.setdefault(k, []).append(float(v) if v not in ("", None) else float("nan"))
            except ValueError:
                cols.setdefault(k, []).append(float("nan"))
    return cols


def _label(run_dir: Path) -> str:
    from shoal.config import load_yaml_file

    cfg = Path(run_dir) / "config.yaml"
    if cfg.exists():
        c = load_yaml_file(cfg)
        return f"{c['algo']} {c['env']} s{c['run']['seed']} ({Path(run_dir).name})"
    return Path(run_dir).name


def plot_runs(run_dirs: list[Path], out: Path, x: str = "env_steps", y: str = "episode_return_mean",
              title: str | None = None, ymin: float | None = None, ymax: float | None = None) -> Path:
    """Overlay the ``y`` curves of several runs against ``x`` and save a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for d in run_dirs:
        cols = read_metrics(d)
        if x not in cols or y not in cols:
            raise ShoalError(f"{d}/metrics.csv has no column {x if x not in cols else y!r}; columns: {', '.join(cols)}")
        pts = [(a, b) for a, b in zip(cols[x], cols[y]) if b == b and a == a]  # drop blanks (NaN)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=_label(d), linewidth=1.5)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
