"""Videos of a policy: episodes rendered frame by frame and streamed to an mp4 by imageio-ffmpeg.

Each frame (one at each reset and after each step) goes to the encoder as soon as it is
rendered, so a video of any length holds one frame in memory; imageio-ffmpeg brings its own
ffmpeg binary. Every frame is kept (moviepy's writer drops the last frame of some videos).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from shoal.core.interfaces import Policy
from shoal.envs.render import render_env
from shoal.errors import ConfigError, EnvError, ShoalError
from shoal.io.modes import make_default_mode
from shoal.run.evaluate import evaluation_env

#: Longest side of the reduced frames a video keeps for TensorBoard (``keep_frames``).
PREVIEW_SIDE = 240


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
    """Every frame reduced to at most :data:`PREVIEW_SIDE` pixels a side, ``[T, h, w, 3]`` uint8, when asked for
    (``keep_frames``); the full-size frames are only in the mp4."""


def preview_stride(height: int, width: int, longest_side: int = PREVIEW_SIDE) -> int:
    """The whole stride that brings a ``height x width`` frame's longest side to at most ``longest_side``."""
    return max(1, -(-max(height, width) // longest_side))


class Mp4Writer:
    """Streams RGB frames ``[H, W, 3]`` uint8 into an H.264 mp4, every frame kept (odd sizes padded by a pixel)."""

    def __init__(self, path: str | Path, fps: int) -> None:
        self.path, self.fps = Path(path), fps
        self.size: tuple[int, int] | None = None  # (width, height), set by the first frame
        self._gen: Any = None

    def send(self, frame: np.ndarray) -> None:
        """Encode one frame; every frame must have the first one's size."""
        f = np.asarray(frame, np.uint8)[..., :3]
        if self._gen is None:
            import imageio_ffmpeg

            h, w = f.shape[:2]
            self.size = (w + w % 2, h + h % 2)  # yuv420p needs even sizes
            self._gen = imageio_ffmpeg.write_frames(str(self.path), self.size, fps=self.fps, codec="libx264",
                                                    pix_fmt_in="rgb24", pix_fmt_out="yuv420p", macro_block_size=1,
                                                    ffmpeg_log_level="error")
            self._gen.send(None)
        assert self.size is not None
        w, h = self.size
        if f.shape[:2] != (h, w):
            if f.shape[0] > h or f.shape[1] > w or f.shape[0] < h - 1 or f.shape[1] < w - 1:
                raise EnvError(f"the env rendered a {f.shape[1]}x{f.shape[0]} frame after {w}x{h} ones; "
                               "videos need frames of one size")
            f = np.pad(f, ((0, h - f.shape[0]), (0, w - f.shape[1]), (0, 0)), mode="edge")
        self._gen.send(np.ascontiguousarray(f))

    def close(self) -> None:
        """Finish the file (it is complete once this returns)."""
        if self._gen is not None:
            gen, self._gen = self._gen, None
            gen.close()


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: int) -> None:
    """Encode RGB frames ``[H, W, 3]`` uint8 as an H.264 mp4, every frame kept (odd sizes padded by a pixel)."""
    writer = Mp4Writer(path, fps)
    try:
        for f in frames:
            writer.send(f)
    finally:
        writer.close()


def _check_video_deps() -> None:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise ConfigError("videos need imageio-ffmpeg; install it with: pip install 'shoal[video]'") from None


def check_video_options(path: str | Path, episodes: int = 1, max_frames: int = 1) -> Path:
    """The mp4 ``path``, or the one-line error :func:`record_video` would raise for these options."""
    _check_video_deps()
    if episodes < 1 or max_frames < 1:
        raise ConfigError(f"a video needs episodes >= 1 and max_frames >= 1, got {episodes} and {max_frames}")
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ConfigError(f"videos are written as mp4, got {str(path)!r}; name the file e.g. video.mp4")
    return path


def _frame(env: Any) -> np.ndarray:
    frame = env.render()
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[-1] not in (3, 4):
        raise EnvError(f"the env's render() returned {type(frame).__name__} "
                       f"{getattr(frame, 'shape', '')}, not an RGB frame [H, W, 3]; videos need rgb_array frames")
    return frame


def record_video(policy: Policy, env: Any, path: str | Path, episodes: int = 1, seed: int = 0, max_frames: int = 1000,
                 action_bounds: tuple[Any, Any] | None = None, keep_frames: bool = False,
                 fresh_policy: Callable[[], Policy] | None = None) -> Video:
    """Play ``episodes`` episodes of ``policy`` on ``env`` (episode ``i`` seeded ``seed + i``) into one mp4 at ``path``.

    ``env`` is played as evaluation plays it (Atari: the full game, real rewards). One frame
    is written at each reset and after each step, so an episode of ``L`` steps gives ``L + 1``
    frames; recording stops at ``max_frames`` frames, and an episode starts only if it can
    show at least one step. ``policy`` takes a batch of observations, as evaluation's does;
    continuous actions are clipped to ``action_bounds``. A policy that carries state from
    call to call (an LSTM's) must start each episode afresh: ``fresh_policy()`` then makes the
    policy of every episode after the first. ``keep_frames`` also returns the frames, reduced
    (:attr:`Video.images`). The file is written in full or not at all.
    """
    path = check_video_options(path, episodes, max_frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    made, fps = render_env(evaluation_env(env))
    out = Video(path, 0, fps)
    previews: list[np.ndarray] = []
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".mp4", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    writer = Mp4Writer(tmp, fps)

    def capture() -> None:
        frame = _frame(made)
        writer.send(frame)
        if keep_frames:
            stride = preview_stride(frame.shape[0], frame.shape[1])
            previews.append(np.array(frame[::stride, ::stride, :3], np.uint8))
        out.frames += 1

    try:
        for ep in range(episodes):
            if ep > 0 and out.frames + 2 > max_frames:
                break  # no room for a reset frame and one step
            if ep > 0 and fresh_policy is not None:
                policy = fresh_policy()
            obs, _ = made.reset(seed=seed + ep)
            capture()
            ret, length, done = 0.0, 0, False
            while not done and out.frames < max_frames:
                action = np.asarray(policy(np.asarray(obs)[None]))[0]
                if action_bounds is not None:
                    action = np.clip(action, *action_bounds)
                obs, reward, terminated, truncated, _ = made.step(action)
                ret += float(reward)
                length += 1
                capture()
                done = bool(terminated or truncated)
            out.returns.append(ret)
            out.lengths.append(length)
        writer.close()
        make_default_mode(tmp)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        writer.close()
        made.close()
        tmp.unlink(missing_ok=True)
    if keep_frames and previews:
        out.images = np.stack(previews)
    return out


def check_video_env(env: Any) -> None:
    """Raise, as one line, the error recording would raise if ``env`` (played as evaluation plays it) cannot be filmed.

    The env is made, reset (seed 0) and rendered once.
    """
    _check_video_deps()
    made, _ = render_env(evaluation_env(env))
    try:
        made.reset(seed=0)
        _frame(made)
    except ShoalError:
        raise
    except Exception as e:
        text = str(e).strip()
        why = f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__
        raise EnvError(f"the env cannot render a frame ({why}); without a display, choose a headless GL backend "
                       "for MuJoCo with MUJOCO_GL=egl or MUJOCO_GL=osmesa, or train without capture_video") from None
    finally:
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
