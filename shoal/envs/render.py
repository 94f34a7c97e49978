"""Single envs that render ``rgb_array`` frames, played as evaluation plays them (for videos)."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym

from shoal.envs.make import make_env
from shoal.errors import ConfigError, EnvError

#: Frames per agent step under the Atari preprocessing (each action is repeated this many frames).
ATARI_FRAME_SKIP = 4
#: The Atari 2600's own frame rate (NTSC), at which the ALE emulates.
ATARI_FPS = 60


def headless_gl() -> None:
    """Let MuJoCo render without a display: ``MUJOCO_GL=egl`` unless the user chose a backend or has a display."""
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"


def render_env(env: Any) -> tuple[gym.Env, int]:
    """``(a single env whose render() returns RGB frames, the frames per second of real-time playback)``.

    ``env`` is what evaluation plays (:func:`shoal.run.evaluate.evaluation_env` of the run's
    env): a Gymnasium id (``module:EnvId`` included), an :class:`~shoal.envs.atari.AtariEnv`
    (its preprocessing, rendering the game's colour screen) or a factory, which must make envs
    with ``render_mode="rgb_array"``.
    """
    from shoal.envs.atari import AtariEnv, make_atari_env

    headless_gl()
    if isinstance(env, AtariEnv):
        made = make_atari_env(env.env_id, episodic_life=env.episodic_life, clip_rewards=env.clip_rewards,
                              frame_stack=env.frame_stack, repeat_action_probability=env.repeat_action_probability,
                              render_mode="rgb_array")
        # One frame per agent step, each standing for ATARI_FRAME_SKIP frames of the game: real time.
        return made, ATARI_FPS // ATARI_FRAME_SKIP
    if isinstance(env, str):
        try:
            made = make_env(env, render_mode="rgb_array")
        except TypeError as e:
            raise EnvError(f"env {env!r} cannot be made with render_mode='rgb_array' ({e}); "
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
