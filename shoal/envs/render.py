"""Single envs that render ``rgb_array`` frames, played as evaluation plays them (for videos)."""

from __future__ import annotations

import os
import sys
from typing import Any

import gymnasium as gym

from shoal.envs.make import check_env_id, make_env
from shoal.errors import ConfigError, EnvError

#: Frames per agent step under the Atari preprocessing (each action is repeated this many frames).
ATARI_FRAME_SKIP = 4
#: The Atari 2600's own frame rate (NTSC), at which the ALE emulates.
ATARI_FPS = 60


def is_mujoco_env(env_id: str) -> bool:
    """Whether the registered Gymnasium id ``env_id`` is a MuJoCo env (its entry point lives in a ``mujoco`` module)."""
    try:
        entry = gym.spec(env_id).entry_point
    except gym.error.Error:
        return False
    module = entry.split(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", "")
    return "mujoco" in module.split(".")


def headless_gl(env_id: str) -> None:
    """Let MuJoCo render without a display: ``MUJOCO_GL=egl`` for a MuJoCo env on Linux with no display.

    Nothing changes when the user chose a backend, on other systems (macOS and Windows render
    with their own GL) or for other envs. MuJoCo reads the variable when it first renders (and
    ``mujoco`` when imported), so once set it stays set for the process.
    """
    if (sys.platform.startswith("linux") and "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY") and is_mujoco_env(env_id)):
        os.environ["MUJOCO_GL"] = "egl"


def _declared_render_modes(env_id: str) -> list[str] | None:
    """The ``render_modes`` the registered env class declares, read without making the env.

    None when unknown: an entry point that is not a class, or an empty list (gym.Env's default).
    """
    try:
        entry = gym.spec(env_id).entry_point
        creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    except Exception:  # an entry point that does not import is gym.make's to report
        return None
    modes = getattr(creator, "metadata", {}).get("render_modes") if isinstance(creator, type) else None
    return list(modes) if modes else None


def render_env(env: Any) -> tuple[gym.Env, int]:
    """``(a single env whose render() returns RGB frames, the frames per second of real-time playback)``.

    ``env`` is what evaluation plays (:func:`shoal.run.evaluate.evaluation_env` of the run's
    env): a Gymnasium id (``module:EnvId`` included), an :class:`~shoal.envs.atari.AtariEnv`
    (its preprocessing, rendering the game's colour screen) or a factory, which must make envs
    with ``render_mode="rgb_array"``.
    """
    from shoal.envs.atari import AtariEnv, make_atari_env

    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame renderers (classic control) need no sound device
    if isinstance(env, AtariEnv):
        made = make_atari_env(env.env_id, episodic_life=env.episodic_life, clip_rewards=env.clip_rewards,
                              frame_stack=env.frame_stack, repeat_action_probability=env.repeat_action_probability,
                              render_mode="rgb_array")
        # One frame per agent step, each standing for ATARI_FRAME_SKIP frames of the game: real time.
        return made, ATARI_FPS // ATARI_FRAME_SKIP
    if isinstance(env, str):
        env_id = check_env_id(env)
        modes = _declared_render_modes(env_id)
        if modes is not None and "rgb_array" not in modes:
            raise EnvError(f"env {env!r} does not render rgb_array frames (it offers {modes}); "
                           "videos need an env that does")
        headless_gl(env_id)
        try:
            made = make_env(env, render_mode="rgb_array")
        except (TypeError, ValueError, gym.error.Error) as e:
            raise EnvError(f"env {env!r} cannot be made with render_mode='rgb_array' ({_first_line(e)}); "
                           "record videos of an env that renders RGB frames") from None
    elif callable(env):
        made = make_env(env)
        if made.render_mode != "rgb_array":
            made.close()
            raise ConfigError(f"the env factory makes envs with render_mode={made.render_mode!r}; make it pass "
                              "render_mode='rgb_array' (e.g. gym.make(ID, render_mode='rgb_array')) to record videos")
    else:
        raise ConfigError(f"cannot record videos of env {env!r}; pass a Gymnasium id or an env factory")
    if "rgb_array" not in made.metadata.get("render_modes", ["rgb_array"]):
        made.close()
        raise EnvError(f"env {env!r} does not render rgb_array frames (it offers {made.metadata.get('render_modes')}); "
                       "videos need an env that does")
    return made, int(made.metadata.get("render_fps") or 30)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
