"""The blocking maze of Sutton & Barto (2nd ed., Example 8.2, Figure 8.4): a wall that moves after 1,000 steps."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from shoal.envs.toy.maze import GridMaze, _check_layout

#: Rows 0 (top) to 5 (bottom), columns 0 to 8: S start (row 5, column 3), T goal (row 0, column 8).
#: Until the wall moves, row 3 is walled in columns 0-7: the short way (10 steps) is round its right end.
BLOCKING_LAYOUT_BEFORE: tuple[str, ...] = (
    "........T",
    ".........",
    ".........",
    "########.",
    ".........",
    "...S.....",
)
#: After it moves, row 3 is walled in columns 1-8: the only way (16 steps) is round its left end.
BLOCKING_LAYOUT_AFTER: tuple[str, ...] = (
    "........T",
    ".........",
    ".........",
    ".########",
    ".........",
    "...S.....",
)


class BlockingMaze(GridMaze):
    """A 6x9 grid whose wall on row 3 moves from columns 0-7 to columns 1-8 after ``change_at`` steps.

    Layout before the change (:data:`BLOCKING_LAYOUT_BEFORE`) and after it
    (:data:`BLOCKING_LAYOUT_AFTER`), row 0 at the top::

        ........T      ........T
        .........      .........
        .........      .........
        ########.  ->  .########
        .........      .........
        ...S.....      ...S.....

    The first ``change_at`` (1,000) steps of the env's lifetime, counted across episodes
    (resets do not restart the count), use the first layout; every later step the second.
    An agent standing in the gap as it closes can step out of it. Observations are the cell
    index ``row * 9 + col`` (``Discrete(54)``); actions 0 up, 1 right, 2 down, 3 left; moving
    into the wall or the border stays put. Reaching T gives +1 and ends the episode; every
    other step gives 0. A new env (a resumed run's included) starts the count again, and
    each env copy counts only its own steps. ``shoal/BlockingMazeMoved-v0``
    (:func:`blocking_maze_moved`) is the maze with its wall already moved, what an agent
    trained past ``change_at`` steps is evaluated on.
    """

    def __init__(self, change_at: int = 1000, layouts: Sequence[Sequence[str]] | None = None,
                 render_mode: str | None = None, cell_pixels: int = 24) -> None:
        before, after = layouts if layouts is not None else (BLOCKING_LAYOUT_BEFORE, BLOCKING_LAYOUT_AFTER)
        if change_at < 0:
            raise ValueError(f"change_at is a number of env steps >= 0, got {change_at}")
        super().__init__(layout=before, render_mode=render_mode, cell_pixels=cell_pixels)
        self._before = self.grid
        self._after = np.array([list(r) for r in _check_layout(after)])
        if self._after.shape != self._before.shape or int(np.flatnonzero(self._after.ravel() == "S")[0]) != self.start:
            raise ValueError("the two blocking-maze layouts must have the same size and the same start cell")
        self.change_at = int(change_at)
        self.lifetime_steps = 0
        if self.change_at == 0:
            self.grid = self._after

    @property
    def changed(self) -> bool:
        """Whether the wall has moved (every later step uses the second layout)."""
        return self.lifetime_steps >= self.change_at

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        out = super().step(action)
        self.lifetime_steps += 1
        if self.lifetime_steps == self.change_at:
            self.grid = self._after
        return out


def blocking_maze_moved(render_mode: str | None = None, cell_pixels: int = 24) -> BlockingMaze:
    """The blocking maze with its wall moved from the first step (``shoal/BlockingMazeMoved-v0``).

    A fresh :class:`BlockingMaze` starts on the first layout; this one is the world an agent
    meets after ``change_at`` steps of training, so evaluating such an agent on it tests the
    policy on the maze as it is then.
    """
    return BlockingMaze(change_at=0, render_mode=render_mode, cell_pixels=cell_pixels)
