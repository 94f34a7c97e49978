"""Videos of a policy: episodes rendered to mp4 by Gymnasium's RecordVideo, encoded by imageio-ffmpeg.

RecordVideo captures the frames (one at each reset and after each step); its mp4 is written
by imageio-ffmpeg (which brings its own ffmpeg binary) rather than by moviepy, whose writer
drops the last frame of some videos (float rounding of ``frames / fps * fps``, e.g. 25 frames
at 15 fps come out as 24). RecordVideo still needs moviepy installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from shoal.core.interfaces import Policy
from shoal.envs.render import render_env
from shoal.errors import ConfigError
from shoal.run.evaluate import evaluation_env


@dataclass
class Video:
    """A recorded video: where it is, how long, and the episodes it shows."""

    path: Path
    frames: int
    fps: int
    returns: list[float] = field(default_factory=list)
    """The env's return of each episode shown (the last one may be cut by the frame cap)."""
    lengths: list[int] = field(default_factory=list)
    """Agent steps of each episode shown."""
    images: np.ndarray | None = None
    """The frames ``[T, H, W, 3]`` uint8, when asked for (``keep_frames``)."""


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: int) -> None:
    """Encode RGB frames ``[H, W, 3]`` uint8 as an H.264 mp4, every frame kept (odd sizes padded by a pixel)."""
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    size = (w + w % 2, h + h % 2)  # yuv420p needs even sizes
    writer = imageio_ffmpeg.write_frames(str(path), size, fps=fps, codec="libx264", pix_fmt_in="rgb24",
                                         pix_fmt_out="yuv420p", macro_block_size=1, ffmpeg_log_level="error")
    writer.send(None)
    try:
        for f in frames:
            f = np.asarray(f, np.uint8)[..., :3]
            if f.shape[:2] != (size[1], size[0]):
                f = np.pad(f, ((0, size[1] - f.shape[0]), (0, size[0] - f.shape[1]), (0, 0)), mode="edge")
            writer.send(np.ascontiguousarray(f))
    finally:
        writer.close()


def _recorder(env: Any, folder: Path, max_frames: int, fps: int) -> Any:
    """RecordVideo over ``env`` keeping one recording across resets, written by :func:`write_mp4`."""
    from gymnasium.wrappers import RecordVideo

    class _Recorder(RecordVideo):
        def stop_recording(self) -> None:
            assert self.recording, "stop_recording was called, but no recording was started"
            if self.recorded_frames:
                frames = [np.asarray(f) for f in self.recorded_frames]
                write_mp4(Path(self.video_folder) / f"{self._video_name}.mp4", frames, self.frames_per_sec)
            self.recorded_frames = []
            self.recording = False
            self._video_name = None

    # A finite video_length keeps one recording across resets: every episode lands in the same file.
    return _Recorder(env, str(folder), episode_trigger=lambda i: i == 0, video_length=max_frames, name_prefix="video",
                     fps=fps, disable_logger=True)


def _check_video_deps() -> None:
    try:
        import imageio_ffmpeg  # noqa: F401
        import moviepy  # noqa: F401
    except ImportError:
        raise ConfigError("videos need moviepy and imageio-ffmpeg; install them with: pip install 'shoal[video]'") from None


def record_video(policy: Policy, env: Any, path: str | Path, episodes: int = 1, seed: int = 0, max_frames: int = 1000,
                 action_bounds: tuple[Any, Any] | None = None, keep_frames: bool = False,
                 fresh_policy: Callable[[], Policy] | None = None) -> Video:
    """Play ``episodes`` episodes of ``policy`` on ``env`` (episode ``i`` seeded ``seed + i``) into one mp4 at ``path``.

    ``env`` is played as evaluation plays it (Atari: the full game, real rewards). One frame
    is written at each reset and after each step, so an episode of ``L`` steps gives ``L + 1``
    frames; recording stops at ``max_frames`` frames. ``policy`` takes a batch of
    observations, as evaluation's does; continuous actions are clipped to ``action_bounds``.
    A policy that carries state from call to call (an LSTM's) must start each episode afresh:
    ``fresh_policy()`` then makes the policy of every episode after the first. The file is
    written in full or not at all.
    """
    _check_video_deps()
    if episodes < 1 or max_frames < 1:
        raise ConfigError(f"a video needs episodes >= 1 and max_frames >= 1, got {episodes} and {max_frames}")
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ConfigError(f"videos are written as mp4, got {str(path)!r}; name the file e.g. video.mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    made, fps = render_env(evaluation_env(env))
    tmp = Path(tempfile.mkdtemp(prefix=".video-", dir=path.parent))
    rec = _recorder(made, tmp / "out", max_frames, fps)
    out = Video(path, 0, fps)
    images: list[np.ndarray] = []
    try:
        for ep in range(episodes):
            if out.frames >= max_frames:
                break
            if ep > 0 and fresh_policy is not None:
                policy = fresh_policy()
            obs, _ = rec.reset(seed=seed + ep)
            out.frames += 1
            ret, length, done = 0.0, 0, False
            while not done and out.frames < max_frames:
                action = np.asarray(policy(np.asarray(obs)[None]))[0]
                if action_bounds is not None:
                    action = np.clip(action, *action_bounds)
                obs, reward, terminated, truncated, _ = rec.step(action)
                ret += float(reward)
                length += 1
                out.frames += 1
                done = bool(terminated or truncated)
            out.returns.append(ret)
            out.lengths.append(length)
        if keep_frames:
            images = list(rec.recorded_frames)
    except BaseException:
        rec.recording = False  # nothing half-written: drop the frames instead of saving them
        rec.recorded_frames = []
        rec.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        rec.close()  # writes tmp/out/video-episode-0.mp4
        written = tmp / "out" / "video-episode-0.mp4"
        os.replace(written, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if keep_frames:
        out.images = np.stack(images) if images else None
    return out


def check_video_env(env: Any) -> None:
    """Raise the error recording would raise if ``env`` (played as evaluation plays it) cannot be filmed."""
    _check_video_deps()
    made, _ = render_env(evaluation_env(env))
    made.close()


def record_run_video(run_dir: str | Path, path: str | Path, episodes: int = 1, seed: int | None = None,
                     max_frames: int | None = None) -> Video:
    """A video of the greedy policy of a run's last checkpoint, played as ``shoal eval`` plays it.

    ``seed`` defaults to the run's evaluation seed (so the first episode is the first one
    ``shoal eval`` scores), ``max_frames`` to the run's ``video_max_frames``.
    """
    from shoal.core.seeding import derive_seed
    from shoal.envs.make import env_spec
    from shoal.run.alphazero import is_game_run
    from shoal.run.evaluate import evaluation_env_id
    from shoal.run.reload import load_agent

    if is_game_run(Path(run_dir)):
        raise ConfigError(f"{run_dir} is a board-game run; videos record Gymnasium envs (watch games with `shoal play`)")
    builder, net, cfg, _ = load_agent(Path(run_dir))
    spec = env_spec(cfg["env"])
    bounds = None if spec.discrete else (spec.action_low, spec.action_high)
    env = cfg["run"].get("eval_env") or evaluation_env_id(cfg["env"])
    seed = derive_seed(cfg["run"]["seed"], "eval") if seed is None else seed
    frames = max_frames if max_frames is not None else int(cfg["run"].get("video_max_frames", 1000))
    return record_video(builder.make_policy(net, evaluation=True), env, path, episodes, seed, frames, bounds,
                        fresh_policy=lambda: builder.make_policy(net, evaluation=True))
