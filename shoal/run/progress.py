"""The live progress line: steps, steps per second and mean episode return."""

from __future__ import annotations

import math
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressLine:
    """A rich progress bar updated once per iteration (throttled by rich itself)."""

    def __init__(self, total: int, label: str, disable: bool = False) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
            TextColumn("{task.fields[sps]:>9,.0f} sps"), TextColumn("return {task.fields[ret]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), disable=disable, refresh_per_second=4,
        )
        self.task = self.progress.add_task(label, total=total, sps=0.0, ret="-")
        self.sps = 0.0

    def __enter__(self) -> "ProgressLine":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, env_steps: int, row: dict[str, Any]) -> None:
        self.sps = 0.9 * self.sps + 0.1 * row["sps"] if self.sps else row["sps"]
        ret = row.get("episode_return_mean", float("nan"))
        self.progress.update(self.task, completed=env_steps, sps=self.sps,
                             ret="-" if ret is None or (isinstance(ret, float) and math.isnan(ret)) else f"{ret:.1f}")
