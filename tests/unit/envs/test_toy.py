"""The toy envs: Gymnasium's env checker, dynamics, rewards, rendering, registration."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import shoal.envs.toy  # noqa: F401  (registers the ids)
from shoal.envs import make_vec_env
from shoal.envs.make import check_env_id, env_spec
from shoal.envs.toy import DEFAULT_LAYOUT, GridMaze, Treasure1D, random_layout, shortest_path_length

IDS = ["shoal/Treasure1D-v0", "shoal/GridMaze-v0"]


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("render_mode", [None, "ansi", "rgb_array"])
def test_passes_gymnasium_env_checker(env_id: str, render_mode: str | None) -> None:
    env = gym.make(env_id)
    if render_mode is not None and render_mode not in env.metadata["render_modes"]:
        pytest.skip(f"{env_id} has no {render_mode} mode")
    env = gym.make(env_id, render_mode=render_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env.unwrapped, skip_render_check=False)


def test_generated_maze_passes_env_checker() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make("shoal/GridMaze-v0", size=(5, 9), layout_seed=4).unwrapped)


@pytest.mark.parametrize("env_id", IDS)
def test_registered_and_discrete(env_id: str) -> None:
    check_env_id(env_id)
    spec = env_spec(env_id)
    assert spec.discrete and spec.num_obs_states is not None
    venv = make_vec_env(env_id, 2, seed=0)
    assert venv.obs.shape == (2,)
    venv.close()


def test_treasure_walks_right_to_the_treasure() -> None:
    env = Treasure1D(size=6, render_mode="ansi")
    obs, _ = env.reset(seed=0)
    assert obs == 0 and env.render() == "o----T"
    obs, r, term, trunc, _ = env.step(0)  # left at the wall stays put
    assert (obs, r, term, trunc) == (0, 0.0, False, False)
    obs, r, term, _, _ = env.step(1)
    assert (obs, r, term) == (1, 0.0, False) and env.render() == "-o---T"
    for _ in range(3):
        obs, r, term, _, _ = env.step(1)
    assert (obs, r, term) == (4, 0.0, False) and env.render() == "----oT"
    obs, r, term, _, _ = env.step(1)
    assert (obs, r, term) == (5, 1.0, True) and env.render() == "-----o"


def test_treasure_time_limit_truncates() -> None:
    env = gym.make("shoal/Treasure1D-v0")
    env.reset(seed=0)
    for _ in range(99):
        assert env.step(0)[3] is False
    assert env.step(0)[3] is True


def test_maze_walls_traps_and_treasure() -> None:
    env = GridMaze(layout=["S.#", ".X.", "..T"], render_mode="ansi")
    obs, _ = env.reset(seed=0)
    assert obs == 0 and env.render() == "o.#\n.X.\n..T"
    assert env.step(0)[:3] == (0, 0.0, False)  # up: border, stays
    assert env.step(1)[:3] == (1, 0.0, False)  # right
    assert env.step(1)[:3] == (1, 0.0, False)  # into the wall: stays
    assert env.step(2)[:3] == (4, -1.0, True)  # down onto the trap
    env.reset()
    for a in (2, 2, 1):
        obs, r, term, trunc, _ = env.step(a)
    assert (obs, r, term, trunc) == (7, 0.0, False, False)
    assert env.step(1)[:3] == (8, 1.0, True)


def test_maze_rgb_render() -> None:
    env = GridMaze(render_mode="rgb_array", cell_pixels=10)
    env.reset(seed=0)
    img = env.render()
    assert img.shape == (60, 60, 3) and img.dtype == np.uint8
    assert tuple(img[5, 5]) == (40, 90, 200)  # the agent in the start cell
    assert tuple(img[5, 35]) == (60, 60, 60)  # the wall at (0, 3)


def test_default_maze_is_6x6_and_solvable_in_10() -> None:
    env = gym.make("shoal/GridMaze-v0")
    assert env.observation_space.n == 36 and env.action_space.n == 4
    assert shortest_path_length(DEFAULT_LAYOUT) == 10


def test_random_layout_is_solvable_and_seeded() -> None:
    a, b = random_layout(8, 10, seed=3), random_layout(8, 10, seed=3)
    assert a == b and len(a) == 8 and all(len(r) == 10 for r in a)
    assert shortest_path_length(a) is not None
    assert random_layout(8, 10, seed=4) != a
    assert gym.make("shoal/GridMaze-v0", size=8).observation_space.n == 64


@pytest.mark.parametrize("layout, match", [(["S.", "..."], "equally long"), (["S.", ".?"], "unknown cells"),
                                           (["..", ".T"], "exactly one S")])
def test_bad_layouts_are_rejected(layout: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GridMaze(layout=layout)
