"""Videos: one frame per reset and per step, read back from the mp4; run-directory videos during training."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from shoal.errors import ConfigError

pytest.importorskip("moviepy")
pytest.importorskip("imageio_ffmpeg")


def _frames(path) -> np.ndarray:
    """Every frame of an mp4, decoded by imageio's ffmpeg plugin."""
    import imageio.v3 as iio

    return np.stack(list(iio.imiter(str(path), plugin="FFMPEG")))


def _push_left(obs: np.ndarray) -> np.ndarray:
    return np.zeros(len(obs), np.int64)


def _episode_length(env_id: str, seed: int, policy) -> int:
    """Steps of one episode of ``policy`` on Gymnasium's own env (no shoal), reset with ``seed``."""
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    n, done = 0, False
    while not done:
        obs, _, terminated, truncated, _ = env.step(policy(np.asarray(obs)[None])[0])
        n, done = n + 1, terminated or truncated
    env.close()
    return n


def test_cartpole_video_holds_a_frame_per_reset_and_step(tmp_path):
    from shoal.run.video import record_video

    lengths = [_episode_length("CartPole-v1", s, _push_left) for s in (5, 6)]
    video = record_video(_push_left, "CartPole-v1", tmp_path / "cp.mp4", episodes=2, seed=5)
    assert video.lengths == lengths
    frames = _frames(tmp_path / "cp.mp4")
    assert len(frames) == video.frames == sum(n + 1 for n in lengths)
    assert frames.shape[1:] == (400, 600, 3)
    assert frames.std() > 0  # a picture, not a blank
    assert [p.name for p in tmp_path.iterdir()] == ["cp.mp4"]  # no temporary folder left behind


def test_video_stops_at_its_frame_cap(tmp_path):
    from shoal.run.video import record_video

    video = record_video(_push_left, "CartPole-v1", tmp_path / "cap.mp4", episodes=3, seed=5, max_frames=7)
    assert len(_frames(tmp_path / "cap.mp4")) == video.frames == 7
    assert video.lengths == [6]


class _Counting:
    """A stateful policy (as an LSTM's is): right for its first 4 calls, left after."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.full(len(obs), int(self.calls <= 4), np.int64)


def test_a_stateful_policy_starts_every_episode_afresh(tmp_path):
    from shoal.run.video import record_video

    lengths = [_episode_length("CartPole-v1", s, _Counting()) for s in (5, 6, 7)]
    video = record_video(_Counting(), "CartPole-v1", tmp_path / "c.mp4", episodes=3, seed=5, fresh_policy=_Counting)
    assert video.lengths == lengths
    carried = record_video(_Counting(), "CartPole-v1", tmp_path / "d.mp4", episodes=3, seed=5)
    assert carried.lengths[0] == lengths[0] and carried.lengths[1:] != lengths[1:]  # without: state leaks across


def test_atari_video_renders_the_colour_game_screen(tmp_path):
    pytest.importorskip("ale_py")
    from shoal.run.video import record_video

    def noop(obs: np.ndarray) -> np.ndarray:
        assert obs.shape == (1, 4, 84, 84) and obs.dtype == np.uint8  # the policy sees the preprocessed frames
        return np.zeros(len(obs), np.int64)

    video = record_video(noop, "ALE/Breakout-v5", tmp_path / "breakout.mp4", seed=0, max_frames=25)
    frames = _frames(tmp_path / "breakout.mp4")
    assert len(frames) == video.frames == 25
    assert frames.shape[1:] == (210, 160, 3)  # the ALE screen in colour, not the 84x84 grey observation
    assert video.fps == 15  # 60 Hz game, an agent step every 4 frames: real time


def _mujoco_gl() -> tuple[str | None, str]:
    """``(a MUJOCO_GL backend that renders headless here, "")`` or ``(None, why none does)``."""
    try:
        import mujoco  # noqa: F401
    except ImportError:
        return None, "mujoco is not installed (pip install 'shoal[mujoco]')"
    import os
    import subprocess
    import sys

    probe = ("import gymnasium as gym; e = gym.make('InvertedPendulum-v5', render_mode='rgb_array'); e.reset(seed=0); "
             "assert e.render().std() > 0")
    for gl in ("egl", "osmesa"):
        env = {**os.environ, "MUJOCO_GL": gl}
        if subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=60).returncode == 0:
            return gl, ""
    return None, "MuJoCo cannot render headless here: neither MUJOCO_GL=egl nor MUJOCO_GL=osmesa works"


def test_mujoco_video(tmp_path, monkeypatch):
    gl, reason = _mujoco_gl()
    if gl is None:
        pytest.skip(reason)
    monkeypatch.setenv("MUJOCO_GL", gl)
    from shoal.run.video import record_video

    def zero(obs: np.ndarray) -> np.ndarray:
        return np.zeros((len(obs), 1), np.float32)

    length = _episode_length("InvertedPendulum-v5", 1, zero)
    video = record_video(zero, "InvertedPendulum-v5", tmp_path / "mj.mp4", seed=1, max_frames=200)
    frames = _frames(tmp_path / "mj.mp4")
    assert len(frames) == video.frames == min(length + 1, 200)
    assert frames.shape[1:] == (480, 480, 3) and frames.std() > 0


def test_videos_need_an_mp4_path_and_a_rendering_env(tmp_path):
    from shoal.run.video import record_video

    with pytest.raises(ConfigError, match="mp4"):
        record_video(_push_left, "CartPole-v1", tmp_path / "v.gif")
    with pytest.raises(ConfigError, match="render_mode='rgb_array'"):
        record_video(_push_left, lambda: gym.make("CartPole-v1"), tmp_path / "v.mp4")


def _tb_videos(tb_dir) -> dict[int, tuple[int, int, bytes]]:
    """``{step: (height, width, gif bytes)}`` of the eval/video image summaries in a TensorBoard folder."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    out = {}
    for f in sorted(tb_dir.glob("events.out.tfevents.*")):
        for raw in RawEventFileLoader(str(f)).Load():
            event = Event.FromString(raw)
            for v in event.summary.value:
                if v.tag == "eval/video":
                    out[event.step] = (v.image.height, v.image.width, v.image.encoded_image_string)
    return out


def test_training_records_videos_into_the_run_directory_and_tensorboard(tmp_path):
    from shoal.run.runner import train

    run = train("ppo", "CartPole-v1", steps=384, run_dir=tmp_path / "run",
                overrides={"num_envs": 2, "rollout_length": 32, "eval_episodes": 1, "capture_video": True,
                           "video_every": 128, "video_max_frames": 40})
    videos = sorted((run.run_dir / "videos").iterdir())
    assert [v.name for v in videos] == [f"step-{s:012d}.mp4" for s in (128, 256, 384)]
    for v in videos:
        n = len(_frames(v))
        assert 2 <= n <= 40
    # The final video is the final policy's first evaluation episode: its length is the evaluation's.
    assert len(_frames(videos[-1])) == min(int(run.eval["mean_length"]) + 1, 40)
    tb = _tb_videos(run.run_dir / "tb")
    assert sorted(tb) == [128, 256, 384]
    h, w, gif = tb[384]
    assert gif[:6] in (b"GIF87a", b"GIF89a") and (h, w) == (134, 200)  # 400x600 frames at a third of the size
    # Every frame is shown for 1/fps (the GIF writer merges repeated frames into longer ones).
    assert _gif_duration_ms(gif) == pytest.approx(len(_frames(videos[-1])) * 1000 / 50, abs=1)


def _gif_duration_ms(gif: bytes) -> float:
    import io

    from PIL import Image, ImageSequence

    return sum(frame.info["duration"] for frame in ImageSequence.Iterator(Image.open(io.BytesIO(gif))))


def test_training_stops_before_it_starts_when_the_env_cannot_be_filmed(tmp_path):
    from shoal.run.runner import train

    with pytest.raises(ConfigError, match="render_mode"):
        train("ppo", lambda: gym.make("CartPole-v1"), steps=64, run_dir=tmp_path / "run",
              overrides={"num_envs": 2, "rollout_length": 32, "capture_video": True})


def test_shoal_eval_video_records_the_first_evaluation_episode(tmp_path):
    from shoal.cli import main
    from shoal.run.reload import evaluate_run
    from shoal.run.runner import train

    run = train("ppo", "CartPole-v1", steps=128, run_dir=tmp_path / "run",
                overrides={"num_envs": 2, "rollout_length": 32, "eval_episodes": 0})
    out = tmp_path / "media" / "agent.mp4"
    assert main(["eval", str(run.run_dir), "--episodes", "1", "--video", str(out)]) == 0
    length = evaluate_run(run.run_dir, episodes=1)["mean_length"]  # the same seed: the same episode
    assert len(_frames(out)) == int(length) + 1
    assert main(["eval", str(run.run_dir), "--episodes", "1", "--video", str(out), "--video-episodes", "2",
                 "--video-frames", "5"]) == 0
    assert len(_frames(out)) == 5
