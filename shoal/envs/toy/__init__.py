"""Toy environments for tabular RL: the 1-D treasure hunt and a grid maze.

``import shoal`` registers (see :mod:`shoal.envs.registration`) ``shoal/Treasure1D-v0`` (6 cells) and
``shoal/GridMaze-v0`` (the 6x6 :data:`~shoal.envs.toy.maze.DEFAULT_LAYOUT`) with
Gymnasium, idempotently. Both take keyword arguments through ``gym.make``, e.g.
``gym.make("shoal/Treasure1D-v0", size=10)`` or ``gym.make("shoal/GridMaze-v0", size=8, layout_seed=3)``.
"""

from __future__ import annotations

from shoal.envs.toy.maze import DEFAULT_LAYOUT, GridMaze, random_layout, shortest_path_length
from shoal.envs.toy.treasure import Treasure1D

__all__ = ["GridMaze", "Treasure1D", "DEFAULT_LAYOUT", "random_layout", "shortest_path_length"]
