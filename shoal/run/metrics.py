"""Metrics: ``metrics.csv`` plus TensorBoard events (written from a background thread), and trackers (W&B).

Videos go to TensorBoard as animated GIFs in its Images tab (what ``SummaryWriter.add_video``
writes; that method itself needs ``moviepy.editor``, which moviepy 2 removed, so the GIF is
encoded here with imageio), at a reduced size; trackers get the mp4 itself.
"""

from __future__ import annotations

import csv
import math
import queue
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from shoal.errors import ShoalWarning

BASE_COLUMNS = ["env_steps", "wall_time_s", "episode_return_mean", "episode_length_mean", "episodes", "sps", "eval_return_mean"]


class _TensorBoardThread(threading.Thread):
    """Imports the (slow to import) TensorBoard writer off the training thread and drains a queue."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(daemon=True, name="shoal-tensorboard")
        self.log_dir = log_dir
        # (step, scalars) or (step, (tag, frames [T, H, W, C] uint8, fps)) for a video; None ends the thread.
        self.q: queue.Queue[tuple[int, Any] | None] = queue.Queue()
        self.error: str | None = None

    def run(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.log_dir), flush_secs=10)
        except Exception as e:  # TensorBoard is optional at run time; CSV still works
            self.error = f"no TensorBoard writer: {e}"
            while self.q.get() is not None:
                pass
            return
        while True:
            item = self.q.get()
            if item is None:
                break
            step, values = item
            if isinstance(values, tuple):
                try:
                    writer._get_file_writer().add_summary(video_summary(*values), step)
                except Exception as e:  # a video that cannot be encoded must not stop the metrics
                    self.error = f"video at step {step}: {e}"
                continue
            for k, v in values.items():
                writer.add_scalar(k, v, step)
        writer.close()


def preview_frames(frames: np.ndarray, longest_side: int = 240) -> np.ndarray:
    """Frames ``[T, H, W, C]`` subsampled by a whole stride so that their longest side is at most ``longest_side``."""
    stride = max(1, math.ceil(max(frames.shape[1], frames.shape[2]) / longest_side))
    return np.ascontiguousarray(frames[:, ::stride, ::stride])


def gif_timing(fps: int) -> tuple[int, int]:
    """``(k, ms)``: keep every ``k``-th frame and show each for ``ms`` milliseconds, so a GIF plays at about real speed.

    GIF frame delays are whole centiseconds, and browsers show delays under 2 cs as 10 cs: above
    50 fps, frames are dropped (``k = ceil(fps / 50)``) so that each kept one lasts at least 2 cs.
    """
    fps = max(1, int(fps))
    k = math.ceil(fps / 50)
    return k, round(100 * k / fps) * 10


def video_summary(tag: str, frames: np.ndarray, fps: int) -> Any:
    """A TensorBoard image summary holding ``frames [T, H, W, C]`` (uint8) as an animated GIF, as add_video writes.

    The GIF plays at about ``fps`` frames a second, within what GIF delays can say (:func:`gif_timing`).
    """
    import imageio.v3 as iio
    from torch.utils.tensorboard.summary import Summary

    _, h, w, c = frames.shape
    step, duration_ms = gif_timing(fps)
    gif = iio.imwrite("<bytes>", frames[::step], extension=".gif", duration=duration_ms, loop=0)
    image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif)
    return Summary(value=[Summary.Value(tag=tag, image=image)])


class MetricsLogger:
    """Appends one CSV row and one set of TensorBoard scalars per logged iteration."""

    def __init__(self, run_dir: Path, resume: bool = False, tensorboard: bool = True, trackers: list[Any] | None = None) -> None:
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
        self.trackers = list(trackers or [])
        self._tb_warned = False

    def _warn_tensorboard(self) -> None:
        """Warn (once) when the TensorBoard thread met an error: events or videos are then missing there."""
        if self.tb is not None and self.tb.error and not self._tb_warned:
            self._tb_warned = True
            warnings.warn(f"TensorBoard is missing some events ({self.tb.error}); metrics.csv and the mp4s are complete",
                          ShoalWarning, stacklevel=3)

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
        if self.tb or self.trackers:
            step = int(values["env_steps"])
            scalars = {k: float(v) for k, v in values.items()
                       if k != "env_steps" and isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}
            if self.tb:
                self._warn_tensorboard()
                self.tb.q.put((step, scalars))
            for t in self.trackers:
                t.log(step, scalars)

    def log_video(self, step: int, tag: str, path: Path, fps: int, frames: np.ndarray | None = None) -> None:
        """A video recorded at env step ``step``: its frames to TensorBoard (reduced), its mp4 to the trackers."""
        if self.tb and frames is not None:
            self._warn_tensorboard()
            self.tb.q.put((step, (tag, preview_frames(frames), fps)))
        for t in self.trackers:
            t.log_video(step, tag, path, fps)

    def close(self, failed: bool = False) -> None:
        """Flush everything; the trackers' runs end, marked failed when ``failed`` (the run raised)."""
        self.file.close()
        if self.tb:
            self.tb.q.put(None)
            self.tb.join(timeout=30)
            self._warn_tensorboard()
        trackers, self.trackers = self.trackers, []
        first: BaseException | None = None
        for t in trackers:  # every tracker is closed, even after one fails; the first failure is raised
            try:
                t.close(exit_code=1 if failed else 0)
            except BaseException as e:
                first = first or e
        if first is not None:
            raise first
