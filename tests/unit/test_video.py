"""Videos: one frame per reset and per step, read back from the mp4; run-directory videos during training."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from shoal.errors import ConfigError, EnvError

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
    slow = []
    for gl in ("egl", "osmesa"):
        env = {**os.environ, "MUJOCO_GL": gl}
        try:
            if subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=15).returncode == 0:
                return gl, ""
        except subprocess.TimeoutExpired:
            slow.append(gl)
    if slow:
        return None, f"MuJoCo did not render within 15 s here with MUJOCO_GL={' or '.join(slow)}"
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


class _BrokenRender(gym.Wrapper):
    """CartPole whose render() fails (as MuJoCo's does without a GL backend) from its ``fail_from``-th call of the process."""

    calls = 0
    fail_from = 0

    def render(self):
        _BrokenRender.calls += 1
        if _BrokenRender.calls > _BrokenRender.fail_from:
            raise RuntimeError("gladLoadGL error\nsecond line of the GL traceback")
        return super().render()


def _broken_render_env():
    return _BrokenRender(gym.make("CartPole-v1", render_mode="rgb_array"))


@pytest.mark.parametrize("factory,error,match", [
    (lambda: gym.make("CartPole-v1"), ConfigError, "render_mode"),
    (_broken_render_env, EnvError, "MUJOCO_GL"),
])
def test_training_stops_before_it_starts_when_the_env_cannot_be_filmed(tmp_path, monkeypatch, factory, error, match):
    import shoal.run.runner as runner

    monkeypatch.setattr(_BrokenRender, "calls", 0)
    trackers = []
    monkeypatch.setattr(runner, "make_tracker", lambda *a, **k: trackers.append(a))
    with pytest.raises(error, match=match) as info:
        runner.train("ppo", factory, steps=64, run_dir=tmp_path / "run",
                     overrides={"num_envs": 2, "rollout_length": 32, "capture_video": True})
    assert len(str(info.value).splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing was trained, so nothing is left
    assert trackers == []  # no tracker run (an empty W&B run) for an env that cannot be filmed


def test_check_video_env_resets_and_renders_the_env(monkeypatch):
    from shoal.run.video import check_video_env

    monkeypatch.setattr(_BrokenRender, "calls", 0)
    with pytest.raises(EnvError, match="gladLoadGL error.*MUJOCO_GL=egl") as info:
        check_video_env(_broken_render_env)
    assert "\n" not in str(info.value) and _BrokenRender.calls == 1
    check_video_env("CartPole-v1")


def test_a_video_that_fails_during_training_is_a_warning(tmp_path, monkeypatch):
    from shoal.errors import ShoalWarning
    from shoal.run.runner import train

    # The check before training renders once; every video after it fails, the final policy's (after all
    # the training, with video_every=0) included: the run still evaluates and writes eval.json.
    monkeypatch.setattr(_BrokenRender, "calls", 0)
    monkeypatch.setattr(_BrokenRender, "fail_from", 1)
    with pytest.warns(ShoalWarning, match="could not record the video at step 128 .*gladLoadGL error"):
        run = train("ppo", _broken_render_env, steps=128, run_dir=tmp_path / "run",
                    overrides={"num_envs": 2, "rollout_length": 32, "eval_episodes": 1, "capture_video": True})
    assert (run.run_dir / "eval.json").exists() and run.eval is not None
    assert not list((run.run_dir / "videos").glob("*")) and not list((run.run_dir / "videos").glob(".*"))  # no partial file


def test_envs_that_refuse_rgb_array_are_one_line_env_errors(tmp_path):
    from shoal.run.video import record_video

    # shoal's Treasure1D offers ansi and human only, and raises ValueError for any other render_mode.
    with pytest.raises(EnvError, match="does not render rgb_array"):
        record_video(_push_left, "shoal/Treasure1D-v0", tmp_path / "t.mp4")

    class Picky(gym.Env):  # no render_modes declared; checks the mode itself
        observation_space = gym.spaces.Discrete(2)
        action_space = gym.spaces.Discrete(2)

        def __init__(self, render_mode=None):
            if render_mode is not None:
                raise ValueError(f"unsupported render_mode {render_mode!r}")

    gym.register("ShoalTestPicky-v0", entry_point=Picky)
    try:
        with pytest.raises(EnvError, match="cannot be made with render_mode='rgb_array' .*unsupported render_mode"):
            record_video(_push_left, "ShoalTestPicky-v0", tmp_path / "p.mp4")
    finally:
        gym.registry.pop("ShoalTestPicky-v0")
    assert not list(tmp_path.iterdir())


def test_headless_gl_is_set_only_for_mujoco_envs_on_linux_without_a_display(monkeypatch):
    import shoal.envs.render as render

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(render.sys, "platform", "darwin")
    render.headless_gl("InvertedPendulum-v5")
    assert "MUJOCO_GL" not in render.os.environ  # macOS (and Windows) render with their own GL
    monkeypatch.setattr(render.sys, "platform", "linux")
    render.headless_gl("CartPole-v1")
    assert "MUJOCO_GL" not in render.os.environ  # not a MuJoCo env
    monkeypatch.setenv("DISPLAY", ":0")
    render.headless_gl("InvertedPendulum-v5")
    assert "MUJOCO_GL" not in render.os.environ  # a display: MuJoCo's default (glfw) works
    monkeypatch.delenv("DISPLAY")
    render.headless_gl("InvertedPendulum-v5")
    assert render.os.environ["MUJOCO_GL"] == "egl"
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    render.headless_gl("InvertedPendulum-v5")
    assert render.os.environ["MUJOCO_GL"] == "osmesa"  # the user's choice stays


def test_rendering_silences_pygame_audio(monkeypatch):
    from shoal.envs.render import render_env

    monkeypatch.delenv("SDL_AUDIODRIVER", raising=False)
    made, fps = render_env("CartPole-v1")
    made.close()
    import os

    assert os.environ["SDL_AUDIODRIVER"] == "dummy" and fps == 50
    monkeypatch.setenv("SDL_AUDIODRIVER", "pulse")
    render_env("CartPole-v1")[0].close()
    assert os.environ["SDL_AUDIODRIVER"] == "pulse"


def test_frames_are_streamed_to_the_encoder_and_only_previews_are_kept(tmp_path, monkeypatch):
    import shoal.run.video as video_mod

    sent = []
    real_send = video_mod.Mp4Writer.send
    monkeypatch.setattr(video_mod.Mp4Writer, "send", lambda self, f: (sent.append(f.shape), real_send(self, f)))
    calls = []

    def policy(obs):
        calls.append(len(sent))  # frames already in the encoder when the policy acts
        return np.zeros(len(obs), np.int64)

    video = video_mod.record_video(policy, "CartPole-v1", tmp_path / "s.mp4", episodes=2, seed=5, keep_frames=True)
    # Streamed: the k-th action of an episode sees every frame before it encoded (not buffered to the end).
    first = video.lengths[0]
    assert calls[:first] == list(range(1, first + 1))
    assert calls[first] == first + 2  # the second episode's reset frame is in too
    assert len(sent) == video.frames and sent[0] == (400, 600, 3)
    assert video.images.shape == (video.frames, 134, 200, 3) and video.images.dtype == np.uint8  # a third a side
    full = _frames(tmp_path / "s.mp4")
    assert np.abs(full[-1, ::3, ::3].astype(int) - video.images[-1]).mean() < 8  # the same picture (mp4 is lossy)


def test_a_video_never_ends_on_an_episode_with_no_step(tmp_path):
    from shoal.run.video import record_video

    first = _episode_length("CartPole-v1", 5, _push_left)
    # One frame of room after the first episode: a second one would show its reset and no step.
    video = record_video(_push_left, "CartPole-v1", tmp_path / "v.mp4", episodes=3, seed=5, max_frames=first + 2)
    assert video.lengths == [first] and video.frames == first + 1 == len(_frames(tmp_path / "v.mp4"))
    video = record_video(_push_left, "CartPole-v1", tmp_path / "w.mp4", episodes=3, seed=5, max_frames=first + 3)
    assert video.lengths == [first, 1] and video.frames == first + 3


def test_files_written_get_the_mode_open_gives(tmp_path):
    from shoal.io.checkpoint import atomic_write_text
    from shoal.run.video import record_video

    ref = tmp_path / "ref"
    ref.write_text("")
    mode = ref.stat().st_mode & 0o777
    if mode == 0o600:
        pytest.skip("the umask here makes private files anyway")
    record_video(_push_left, "CartPole-v1", tmp_path / "v.mp4", max_frames=3)
    atomic_write_text(tmp_path / "eval.json", "{}")
    assert (tmp_path / "v.mp4").stat().st_mode & 0o777 == mode
    assert (tmp_path / "eval.json").stat().st_mode & 0o777 == mode


def test_gif_keeps_real_speed_in_whole_centiseconds():
    import io

    from PIL import Image, ImageSequence

    from shoal.run.metrics import gif_timing, video_summary

    assert gif_timing(125) == (3, 20) and gif_timing(50) == (1, 20) and gif_timing(15) == (1, 70)
    assert gif_timing(30) == (1, 30) and gif_timing(60) == (2, 30)
    frames = np.zeros((30, 8, 8, 3), np.uint8)
    frames[np.arange(30), :, :, 0] = (np.arange(30) * 8)[:, None, None]  # every frame differs: none merged
    gif = video_summary("v", frames, 125).value[0].image.encoded_image_string
    shown = list(ImageSequence.Iterator(Image.open(io.BytesIO(gif))))
    assert len(shown) == 10  # every third frame of the 30
    assert [f.info["duration"] for f in shown] == [20] * 10  # 2 cs each: browsers would show 0 or 1 cs as 10 cs
    assert sum(f.info["duration"] for f in shown) == pytest.approx(30 / 125 * 1000, abs=40)


def test_tensorboard_video_failures_are_warned_once(tmp_path, monkeypatch):
    import warnings

    import shoal.run.metrics as metrics
    from shoal.errors import ShoalWarning

    def broken(*args):
        raise ValueError("cannot encode")

    monkeypatch.setattr(metrics, "video_summary", broken)
    logger = metrics.MetricsLogger(tmp_path)
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        logger.log_video(1, "eval/video", tmp_path / "a.mp4", 30, frames)
        logger.log_video(2, "eval/video", tmp_path / "b.mp4", 30, frames)
        logger.log({"env_steps": 3, "sps": 1.0})
        logger.close()
    ours = [w for w in seen if issubclass(w.category, ShoalWarning)]
    assert len(ours) == 1 and "cannot encode" in str(ours[0].message)


def test_capture_video_does_not_change_what_is_learned(tmp_path):
    import csv

    from safetensors.numpy import load_file

    from shoal.run.runner import train

    settings = {"num_envs": 2, "rollout_length": 32, "eval_episodes": 1, "seed": 3}
    plain = train("ppo", "CartPole-v1", steps=192, run_dir=tmp_path / "plain", overrides=settings)
    filmed = train("ppo", "CartPole-v1", steps=192, run_dir=tmp_path / "filmed",
                   overrides={**settings, "capture_video": True, "video_every": 64, "video_max_frames": 30})
    assert len(list((filmed.run_dir / "videos").glob("*.mp4"))) == 3

    def rows(run):
        with (run.run_dir / "metrics.csv").open(newline="") as f:
            return [{k: v for k, v in r.items() if k not in ("wall_time_s", "sps")} for r in csv.DictReader(f)]

    assert rows(plain) == rows(filmed) and len(rows(plain)) >= 3
    assert plain.eval["returns"] == filmed.eval["returns"]
    a = load_file(sorted((plain.run_dir / "checkpoints").glob("ckpt-*[0-9].safetensors"))[-1])
    b = load_file(sorted((filmed.run_dir / "checkpoints").glob("ckpt-*[0-9].safetensors"))[-1])
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


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


@pytest.mark.parametrize("args,match", [
    (["--video", "v.gif"], "mp4"),
    (["--video", "v.mp4", "--video-episodes", "0"], "episodes >= 1"),
    (["--video", "v.mp4", "--video-frames", "0"], "max_frames >= 1"),
])
def test_shoal_eval_checks_the_video_options_before_evaluating(tmp_path, monkeypatch, capsys, args, match):
    import shoal.run.reload as reload
    from shoal.cli import main

    def no_eval(*a, **k):
        raise AssertionError("evaluated before the video options were checked")

    monkeypatch.setattr(reload, "evaluate_run", no_eval)
    assert main(["eval", str(tmp_path / "run"), *args]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and match in err[0]


def test_video_every_without_capture_video_is_a_config_error():
    from shoal.settings import RunConfig

    with pytest.raises(ConfigError, match="video_every=500 records videos only with capture_video=true"):
        RunConfig(video_every=500)
    assert RunConfig(video_every=500, capture_video=True).video_every == 500
