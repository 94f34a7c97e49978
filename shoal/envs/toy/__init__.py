"""Toy environments for tabular RL: the 1-D treasure hunt, a grid maze and the blocking maze.

``import shoal`` registers (see :mod:`shoal.envs.registration`) ``shoal/Treasure1D-v0`` (6 cells),
``shoal/GridMaze-v0`` (the 6x6 :data:`~shoal.envs.toy.maze.DEFAULT_LAYOUT`) and ``shoal/BlockingMaze-v0``
(Sutton & Barto's Figure 8.4, :class:`~shoal.envs.toy.blocking_maze.BlockingMaze`) with
Gymnasium, idempotently. All take keyword arguments through ``gym.make``, e.g.
``gym.make("shoal/Treasure1D-v0", size=10)`` or ``gym.make("shoal/GridMaze-v0", size=8, layout_seed=3)``.
"""

from __future__ import annotations

from shoal.envs.toy.blocking_maze import BlockingMaze
from shoal.envs.toy.maze import DEFAULT_LAYOUT, GridMaze, random_layout, shortest_path_length
from shoal.envs.toy.treasure import Treasure1D

__all__ = ["BlockingMaze", "GridMaze", "Treasure1D", "DEFAULT_LAYOUT", "random_layout", "shortest_path_length"]
