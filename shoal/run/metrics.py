"""Metrics: ``metrics.csv`` plus TensorBoard events (written from a background thread)."""

from __future__ import annotations

import csv
import math
import queue
import threading
from pathlib import Path
from typing import Any

BASE_COLUMNS = ["env_steps", "wall_time_s", "episode_return_mean", "episode_length_mean", "episodes", "sps", "eval_return_mean"]


class _TensorBoardThread(threading.Thread):
    """Imports the (slow to import) TensorBoard writer off the training thread and drains a queue."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(daemon=True, name="shoal-tensorboard")
        self.log_dir = log_dir
        self.q: queue.Queue[tuple[int, dict[str, float]] | None] = queue.Queue()
        self.error: str | None = None

    def run(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.log_dir), flush_secs=10)
        except Exception as e:  # TensorBoard is optional at run time; CSV still works
            self.error = str(e)
            while self.q.get() is not None:
                pass
            return
        while True:
            item = self.q.get()
            if item is None:
                break
            step, values = item
            for k, v in values.items():
                writer.add_scalar(k, v, step)
        writer.close()


class MetricsLogger:
    """Appends one CSV row and one set of TensorBoard scalars per logged iteration."""

    def __init__(self, run_dir: Path, resume: bool = False, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.columns: list[str] | None = None
        if resume and self.path.exists():
            with self.path.open(newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                self.columns = rows[0]
        self.file = self.path.open("a", newline="")
        self.writer: Any = None
        self.tb = _TensorBoardThread(Path(run_dir) / "tb") if tensorboard else None
        if self.tb:
            self.tb.start()

    def truncate_after(self, env_steps: int) -> None:
        """Drop rows logged after ``env_steps`` (a resumed run re-does them)."""
        self.file.close()
        with self.path.open(newline="") as f:
            rows = list(csv.reader(f))
        if rows:
            header, body = rows[0], rows[1:]
            i = header.index("env_steps")
            kept = [r for r in body if r and float(r[i]) <= env_steps]
            import io

            from shoal.io.checkpoint import atomic_write_text

            buf = io.StringIO()
            csv.writer(buf).writerows([header, *kept])
            atomic_write_text(self.path, buf.getvalue())
        self.file = self.path.open("a", newline="")

    def _widen(self, new: list[str]) -> None:
        """Add columns that appear after the first row (e.g. losses once learning starts): rewrite the file."""
        import io

        from shoal.io.checkpoint import atomic_write_text

        self.file.close()
        with self.path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        self.columns = list(self.columns or []) + new
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())
        self.file = self.path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.columns, extrasaction="ignore")

    def log(self, values: dict[str, float]) -> None:
        """Write one row; ``values`` must contain ``env_steps``."""
        if self.columns is None:
            extra = sorted(k for k in values if k not in BASE_COLUMNS)
            self.columns = BASE_COLUMNS + extra
        elif self.writer is not None or self.file.tell() > 0:
            new = sorted(k for k in values if k not in self.columns)
            if new:
                self._widen(new)
        if self.writer is None:
            self.writer = csv.DictWriter(self.file, fieldnames=self.columns, extrasaction="ignore")
            if self.file.tell() == 0:
                self.writer.writeheader()
        row = {k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in values.items()}
        self.writer.writerow(row)
        self.file.flush()
        if self.tb:
            step = int(values["env_steps"])
            scalars = {k: float(v) for k, v in values.items()
                       if k != "env_steps" and isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}
            self.tb.q.put((step, scalars))

    def close(self) -> None:
        self.file.close()
        if self.tb:
            self.tb.q.put(None)
            self.tb.join(timeout=30)
