"""A grid maze with walls, traps and a treasure, of any size and layout."""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: The default 6x6 maze: S start, . floor, # wall, X trap, T treasure (shortest path: 10 steps).
DEFAULT_LAYOUT: tuple[str, ...] = (
    "S..#..",
    ".#...X",
    ".#X#..",
    "...#.#",
    "X#...X",
    "...#.T",
)

#: Action -> (row, col) move: 0 up, 1 right, 2 down, 3 left (CliffWalking's order).
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))
_CELLS = set("S.#XT")
_COLOURS = {".": (236, 236, 236), "S": (190, 215, 240), "#": (60, 60, 60), "X": (210, 60, 50), "T": (240, 190, 40)}


def shortest_path_length(layout: Sequence[str]) -> int | None:
    """Steps from S to T avoiding walls and traps (None if T cannot be reached)."""
    grid = [list(r) for r in layout]
    rows, cols = len(grid), len(grid[0])
    start = next((r, c) for r in range(rows) for c in range(cols) if grid[r][c] == "S")
    dist = {start: 0}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        if grid[r][c] == "T":
            return dist[(r, c)]
        if grid[r][c] == "X":
            continue
        for dr, dc in MOVES:
            n = (r + dr, c + dc)
            if 0 <= n[0] < rows and 0 <= n[1] < cols and grid[n[0]][n[1]] != "#" and n not in dist:
                dist[n] = dist[(r, c)] + 1
                queue.append(n)
    return None


def random_layout(rows: int, cols: int, seed: int = 0, wall_frac: float = 0.2, trap_frac: float = 0.06) -> tuple[str, ...]:
    """A solvable random maze: S in the top-left corner, T in the bottom-right, walls and traps between."""
    if rows < 2 or cols < 2:
        raise ValueError(f"a maze needs at least 2x2 cells, got {rows}x{cols}")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        grid = np.where(rng.random((rows, cols)) < wall_frac, "#", ".").astype("<U1")
        grid[(rng.random((rows, cols)) < trap_frac) & (grid == ".")] = "X"
        grid[0, 0], grid[-1, -1] = "S", "T"
        layout = tuple("".join(r) for r in grid)
        if shortest_path_length(layout) is not None:
            return layout
    raise ValueError(f"found no solvable {rows}x{cols} maze with wall_frac={wall_frac}; lower wall_frac or trap_frac")


def _check_layout(layout: Sequence[str]) -> tuple[str, ...]:
    rows = tuple(str(r) for r in layout)
    if not rows or any(len(r) != len(rows[0]) for r in rows) or not rows[0]:
        raise ValueError("maze layout must be a non-empty list of equally long strings")
    bad = set("".join(rows)) - _CELLS
    if bad:
        raise ValueError(f"maze layout has unknown cells {sorted(bad)}; use S . # X T")
    text = "".join(rows)
    if text.count("S") != 1 or text.count("T") < 1:
        raise ValueError("maze layout needs exactly one S (start) and at least one T (treasure)")
    return rows


class GridMaze(gym.Env):
    """Walk from S to the treasure T; walls (#) block, traps (X) end the episode with reward -1.

    Observations are the cell index ``row * cols + col`` (``Discrete(rows * cols)``);
    actions 0 up, 1 right, 2 down, 3 left. Moving into a wall or the border stays put.
    The treasure gives +1 and ends the episode; other steps give ``step_reward``.
    Choose the layout with ``layout=[...]`` (rows of ``S . # X T``) or a random solvable
    one with ``size=N`` or ``size=(rows, cols)`` and ``layout_seed``; the default is
    :data:`DEFAULT_LAYOUT` (6x6). Render modes: ``ansi`` (text), ``rgb_array``, ``human`` (prints text).
    """

    metadata = {"render_modes": ["ansi", "rgb_array", "human"], "render_fps": 4}

    def __init__(self, layout: Sequence[str] | str | None = None, size: int | Sequence[int] | None = None,
                 layout_seed: int = 0, step_reward: float = 0.0, render_mode: str | None = None,
                 cell_pixels: int = 24) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        if isinstance(layout, str):
            layout = layout.strip().splitlines()
        if layout is None:
            if size is None:
                layout = DEFAULT_LAYOUT
            else:
                r, c = (size, size) if isinstance(size, int) else tuple(size)
                layout = random_layout(int(r), int(c), layout_seed)
        self.layout = _check_layout(layout)
        self.grid = np.array([list(r) for r in self.layout])
        self.rows, self.cols = self.grid.shape
        self.start = int(np.flatnonzero(self.grid.ravel() == "S")[0])
        self.step_reward = float(step_reward)
        self.render_mode = render_mode
        self.cell_pixels = int(cell_pixels)
        self.observation_space = spaces.Discrete(self.rows * self.cols)
        self.action_space = spaces.Discrete(4)
        self.state = self.start

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        self.state = self.start
        if self.render_mode == "human":
            self.render()
        return self.state, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"GridMaze action must be 0 (up), 1 (right), 2 (down) or 3 (left), got {action!r}")
        r, c = divmod(self.state, self.cols)
        dr, dc = MOVES[int(action)]
        nr, nc = r + dr, c + dc
        if 0 <= nr < self.rows and 0 <= nc < self.cols and self.grid[nr, nc] != "#":
            r, c = nr, nc
        self.state = r * self.cols + c
        cell = self.grid[r, c]
        reward = 1.0 if cell == "T" else -1.0 if cell == "X" else self.step_reward
        if self.render_mode == "human":
            self.render()
        return self.state, reward, cell in ("T", "X"), False, {}

    def text(self) -> str:
        """The maze as text, the agent shown as ``o``."""
        grid = self.grid.copy()
        r, c = divmod(self.state, self.cols)
        grid[r, c] = "o"
        return "\n".join("".join(row) for row in grid)

    def rgb(self) -> np.ndarray:
        """The maze as an ``[rows * px, cols * px, 3]`` uint8 image, the agent a blue square."""
        px = self.cell_pixels
        colours = np.array([[_COLOURS[ch] for ch in row] for row in self.grid], np.uint8)
        img = np.repeat(np.repeat(colours, px, axis=0), px, axis=1)
        img[::px, :] = 150  # grid lines
        img[:, ::px] = 150
        r, c = divmod(self.state, self.cols)
        m = max(1, px // 4)
        img[r * px + m:(r + 1) * px - m, c * px + m:(c + 1) * px - m] = (40, 90, 200)
        return img

    def render(self) -> str | np.ndarray | None:
        if self.render_mode == "ansi":
            return self.text()
        if self.render_mode == "rgb_array":
            return self.rgb()
        if self.render_mode == "human":
            print(self.text() + "\n")
        return None

    def grid_layout(self) -> np.ndarray:
        """The layout as a ``[rows, cols]`` character grid (for Q-table plots)."""
        return self.grid.copy()
