"""Toy environments for tabular RL: the 1-D treasure hunt and a grid maze.

Importing this package registers ``shoal/Treasure1D-v0`` (6 cells) and
``shoal/GridMaze-v0`` (the 6x6 :data:`~shoal.envs.toy.maze.DEFAULT_LAYOUT`) with
Gymnasium, idempotently. Both take keyword arguments through ``gym.make``, e.g.
``gym.make("shoal/Treasure1D-v0", size=10)`` or ``gym.make("shoal/GridMaze-v0", size=8, layout_seed=3)``.
"""

from __future__ import annotations

import gymnasium as gym

from shoal.envs.toy.maze import DEFAULT_LAYOUT, GridMaze, random_layout, shortest_path_length
from shoal.envs.toy.treasure import Treasure1D

_IDS = {
    "shoal/Treasure1D-v0": ("shoal.envs.toy.treasure:Treasure1D", 100),
    "shoal/GridMaze-v0": ("shoal.envs.toy.maze:GridMaze", 100),
}


def _register() -> None:
    for env_id, (entry_point, max_steps) in _IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)


_register()

__all__ = ["GridMaze", "Treasure1D", "DEFAULT_LAYOUT", "random_layout", "shortest_path_length"]
