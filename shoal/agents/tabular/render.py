"""Printing and plotting Q-tables: a text table, and for grid worlds a value heat map with greedy arrows.

Functions return strings and matplotlib figures; saving them is the caller's business.
``grid_info`` knows the grid worlds: FrozenLake, CliffWalking, shoal's GridMaze and
Treasure1D (any other env gets the plain ``[states, actions]`` heat map).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

UP, RIGHT, DOWN, LEFT = (-1, 0), (0, 1), (1, 0), (0, -1)

#: Cells drawn without a greedy arrow: walls, traps, holes, goals, the cliff.
_NO_ARROW = set("#XTHGC")
_WALLS = set("#")


@dataclass(frozen=True)
class GridInfo:
    """How a Discrete state index maps onto a grid: ``state = row * cols + col``."""

    cells: np.ndarray  # [rows, cols] characters: S start, # wall, X trap, H hole, C cliff, T/G goal, . floor
    moves: tuple[tuple[int, int], ...]  # action -> (d_row, d_col)
    action_names: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.cells.shape[0]), int(self.cells.shape[1])


def grid_info(env: Any) -> GridInfo | None:
    """The :class:`GridInfo` of a grid-world env (id or instance), or None for other envs."""
    from shoal.envs.make import make_env

    made = isinstance(env, str)
    e = make_env(env) if made else env
    try:
        u: Any = e.unwrapped
        name = type(u).__name__
        if name == "FrozenLakeEnv":
            cells = np.array([[c.decode() if isinstance(c, bytes) else c for c in row] for row in u.desc])
            cells[cells == "F"] = "."
            return GridInfo(cells, (LEFT, DOWN, RIGHT, UP), ("left", "down", "right", "up"))
        if name == "CliffWalkingEnv":
            rows, cols = u.shape
            cells = np.full((rows, cols), ".", "<U1")
            cells[np.asarray(u._cliff, np.bool_)] = "C"
            cells[rows - 1, 0], cells[rows - 1, cols - 1] = "S", "G"
            return GridInfo(cells, (UP, RIGHT, DOWN, LEFT), ("up", "right", "down", "left"))
        if name in ("GridMaze", "BlockingMaze"):
            return GridInfo(u.grid_layout(), (UP, RIGHT, DOWN, LEFT), ("up", "right", "down", "left"))
        if name == "Treasure1D":
            return GridInfo(u.grid_layout(), (LEFT, RIGHT), ("left", "right"))
        return None
    finally:
        if made:
            e.close()


def q_table_text(q: np.ndarray, action_names: Sequence[str] | None = None, grid: GridInfo | None = None,
                 precision: int = 3) -> str:
    """The Q-table as aligned text: one row per state (with its grid cell if known), greedy action marked ``*``."""
    q = np.asarray(q)
    names = list(action_names or (grid.action_names if grid else [f"a{i}" for i in range(q.shape[1])]))
    width = max(precision + 6, *(len(n) + 1 for n in names))
    head = f"{'state':>12} " + "".join(f"{n:>{width}}" for n in names) + "  greedy"
    lines = [head, "-" * len(head)]
    for s, row in enumerate(q):
        label = str(s)
        if grid is not None:
            r, c = divmod(s, grid.shape[1])
            label = f"{s} ({r},{c}){grid.cells[r, c]}"
        best = int(np.argmax(row))
        cells = "".join(f"{v:>{width}.{precision}f}" for v in row)
        lines.append(f"{label:>12} {cells}  {names[best]}")
    return "\n".join(lines)


def greedy_grid_text(q: np.ndarray, grid: GridInfo) -> str:
    """The greedy policy drawn on the grid with arrows (walls, traps and goals keep their letter)."""
    arrows = {UP: "^", RIGHT: ">", DOWN: "v", LEFT: "<"}
    rows, cols = grid.shape
    out = []
    for r in range(rows):
        line = ""
        for c in range(cols):
            ch = grid.cells[r, c]
            line += ch if ch in _NO_ARROW else arrows[grid.moves[int(np.argmax(q[r * cols + c]))]]
        out.append(line)
    return "\n".join(out)


def plot_q_table(q: np.ndarray, grid: GridInfo | None = None, title: str | None = None, ax: Any = None) -> Any:
    """A matplotlib Figure: for grid worlds a heat map of ``max_a Q(s, a)`` with greedy arrows,
    otherwise a heat map of the table itself (states x actions). Draws on ``ax`` if given."""
    from matplotlib.figure import Figure

    q = np.asarray(q, np.float64)
    if ax is None:
        if grid is not None:
            rows, cols = grid.shape
            fig = Figure(figsize=(max(3.0, 0.6 * cols + 1.5), max(1.6, 0.6 * rows + 0.8)), layout="constrained")
        else:
            fig = Figure(figsize=(max(3.0, 0.5 * q.shape[1] + 2), min(12.0, max(3.0, 0.15 * q.shape[0] + 1))), layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    if grid is None:
        im = ax.imshow(q, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_xlabel("action")
        ax.set_ylabel("state")
        fig.colorbar(im, ax=ax, label="Q(s, a)")
    else:
        rows, cols = grid.shape
        values = q.max(axis=1).reshape(rows, cols)
        # Walls, traps, holes, goals and the cliff are never acted in: grey, so the colours span the real states.
        masked = np.ma.masked_where(np.isin(grid.cells, list(_NO_ARROW)), values)
        from matplotlib import colormaps

        im = ax.imshow(masked, cmap=colormaps["viridis"].with_extremes(bad="#505050"), interpolation="nearest")
        greedy = q.argmax(axis=1).reshape(rows, cols)
        for r in range(rows):
            for c in range(cols):
                ch = grid.cells[r, c]
                if ch in _NO_ARROW:
                    colour = "white" if ch in _WALLS else "gold" if ch in "TG" else "#ff6b5b"
                    ax.text(c, r, ch, ha="center", va="center", color=colour, fontweight="bold")
                    continue
                dr, dc = grid.moves[greedy[r, c]]
                ax.annotate("", xy=(c + 0.35 * dc, r + 0.35 * dr), xytext=(c - 0.35 * dc, r - 0.35 * dr),
                            arrowprops={"arrowstyle": "->", "color": "white", "lw": 1.5})
        ax.set_xticks(range(cols))
        ax.set_yticks(range(rows))
        fig.colorbar(im, ax=ax, label="max_a Q(s, a)", shrink=min(0.8, 0.25 + 0.12 * rows))
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def load_q_table(run_dir: str | Path) -> np.ndarray:
    """The Q-table of the latest checkpoint in a tabular run directory."""
    from shoal.errors import CheckpointError
    from shoal.io.checkpoint import list_checkpoints, load_newest_checkpoint

    ckpts = list_checkpoints(Path(run_dir) / "checkpoints")
    if not ckpts:
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}; train a tabular run there first")
    newest, tree, _ = load_newest_checkpoint(Path(run_dir) / "checkpoints", detached=False)
    try:
        return tree["program"]["learner"]["networks"]["q"].numpy()
    except KeyError:
        raise CheckpointError(f"checkpoint {newest} holds no Q-table; is {run_dir} a q_learning/sarsa/sarsa_lambda/dyna_q run?") from None


def plot_run(run_dir: str | Path) -> Any:
    """The Q-table plot of a tabular run directory (env read from its config.yaml)."""
    from shoal.config import load_yaml_file

    cfg = load_yaml_file(Path(run_dir) / "config.yaml")
    q = load_q_table(run_dir)
    return plot_q_table(q, grid_info(cfg["run"].get("eval_env") or cfg["env"]), title=f"{cfg['algo']} on {cfg['env']}")
