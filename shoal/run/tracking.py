"""Experiment trackers that receive what TensorBoard receives: Weights & Biases (``track=wandb``).

A tracker gets every metric row the run logs (the same scalars, at the same env step), the
resolved config once, and the path of every video. W&B plots against ``env_steps`` (a
custom x axis), so a resumed run that re-does steps after its last checkpoint logs them
again without tripping W&B's monotonic step counter. The W&B run id is kept in the run
directory (``wandb.json``): ``--resume`` continues the same W&B run.

Offline use: ``WANDB_MODE=offline`` writes the run under ``WANDB_DIR`` (default: the run
directory) for a later ``wandb sync``; nothing is sent.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

from shoal.errors import ConfigError, ShoalError
from shoal.io.checkpoint import atomic_write_text

#: Seconds W&B may take to start its run before the run stops with an error.
WANDB_INIT_TIMEOUT_S = 60.0


class Tracker(Protocol):
    """Where metrics go besides ``metrics.csv`` and TensorBoard."""

    def log(self, step: int, values: dict[str, float]) -> None:
        """Scalars logged at env step ``step``."""

    def log_video(self, step: int, tag: str, path: Path, fps: int) -> None:
        """An mp4 recorded at env step ``step``."""

    def close(self, exit_code: int = 0) -> None:
        """Flush and finish; ``exit_code`` 1 marks a run that raised."""


class WandbTracker:
    """Logs to a Weights & Biases run (online, or offline with ``WANDB_MODE=offline``)."""

    def __init__(self, run_dir: Path, config: dict[str, Any], project: str, entity: str = "",
                 resume: bool = False) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("track=wandb needs the wandb package; install it with: pip install 'shoal[track]'") from None
        self._wandb = wandb
        run_dir = Path(run_dir)
        id_file = run_dir / "wandb.json"
        run_id = None
        if resume and id_file.exists():
            run_id = json.loads(id_file.read_text()).get("id")
        run_id = run_id or secrets.token_hex(4)  # W&B ids: lowercase letters and digits
        settings = wandb.Settings(init_timeout=WANDB_INIT_TIMEOUT_S, console="off", silent=True,
                                  disable_code=True, x_service_wait=WANDB_INIT_TIMEOUT_S)
        try:
            self.run = wandb.init(project=project or None, entity=entity or None, id=run_id, name=run_dir.name,
                                  config=config, dir=os.environ.get("WANDB_DIR") or str(run_dir),
                                  resume="allow", reinit="create_new", settings=settings)
        except Exception as e:  # wandb raises its own errors (no login, no network, timeouts)
            raise ShoalError(f"could not start the W&B run ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                             "log in with `wandb login`, or run offline with WANDB_MODE=offline and `wandb sync` later") from None
        atomic_write_text(id_file, json.dumps({"id": run_id, "project": project, "entity": entity}, indent=2))
        self.run.define_metric("env_steps")
        self.run.define_metric("*", step_metric="env_steps")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, "env_steps": step})

    def log_video(self, step: int, tag: str, path: Path, fps: int) -> None:
        # The mp4 carries its own frame rate (W&B ignores fps for files).
        self.run.log({tag: self._wandb.Video(str(path), format="mp4"), "env_steps": step})

    def close(self, exit_code: int = 0) -> None:
        try:
            self.run.finish(exit_code=exit_code)
        finally:
            if self._wandb.run is None:
                # finish() can return before W&B's service has written the run's file; stopping the service (when no
                # other W&B run is active in this process) waits for it, so the run is complete when training returns.
                self._wandb.teardown()


def make_tracker(kind: str, run_dir: Path, config: dict[str, Any], project: str, entity: str = "",
                 resume: bool = False) -> Tracker | None:
    """The tracker a run's ``track`` setting names (None for none)."""
    if not kind:
        return None
    if kind == "wandb":
        return WandbTracker(run_dir, config, project, entity, resume)
    raise ConfigError(f"unknown tracker {kind!r}; use track=wandb or leave it empty")
