"""Printing and plotting Q-tables, and the Q-table travelling through a real run's checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import shoal
from shoal.agents.tabular.render import greedy_grid_text, grid_info, load_q_table, plot_q_table, plot_run, q_table_text


def test_grid_info_of_known_grid_worlds() -> None:
    cliff = grid_info("CliffWalking-v1")
    assert cliff.shape == (4, 12) and "".join(cliff.cells[3]) == "SCCCCCCCCCCG"
    lake = grid_info("FrozenLake-v1")
    assert lake.shape == (4, 4) and lake.cells[0, 0] == "S" and lake.cells[3, 3] == "G" and lake.cells[1, 1] == "H"
    assert lake.action_names == ("left", "down", "right", "up")
    maze = grid_info("shoal/GridMaze-v0")
    assert maze.shape == (6, 6) and maze.cells[0, 3] == "#"
    assert grid_info("shoal/Treasure1D-v0").shape == (1, 6)
    assert grid_info("Taxi-v4") is None


def test_text_table_and_greedy_arrows() -> None:
    grid = grid_info("shoal/Treasure1D-v0")
    q = np.zeros((6, 2))
    q[:, 1] = 1.0
    q[0] = [2.0, 1.0]
    text = q_table_text(q, grid=grid)
    lines = text.splitlines()
    assert "left" in lines[0] and "right" in lines[0] and len(lines) == 2 + 6
    assert lines[2].endswith("left") and lines[3].endswith("right")
    assert greedy_grid_text(q, grid) == "<>>>>T"


def test_plot_returns_a_figure_with_arrows() -> None:
    grid = grid_info("CliffWalking-v1")
    q = np.random.default_rng(0).normal(size=(48, 4))
    fig = plot_q_table(q, grid, title="cliff")
    ax = fig.axes[0]
    assert ax.get_title() == "cliff"
    assert len(ax.images) == 1 and ax.images[0].get_array().shape == (4, 12)
    arrows = [c for c in ax.texts if c.get_text() == ""]  # annotate() arrows have empty text
    assert len(arrows) == 48 - 11  # no arrow on the 10 cliff cells and the goal
    table = plot_q_table(np.zeros((500, 6)))  # no grid: the table itself
    assert table.axes[0].images[0].get_array().shape == (500, 6)


def test_q_table_is_checkpointed_by_a_real_run(tmp_path: Path) -> None:
    run = shoal.train("q_learning", "shoal/Treasure1D-v0", steps=300, seed=0, run_dir=tmp_path / "run", quiet=True,
                      tensorboard=False, overrides={"eval_episodes": 2})
    q = load_q_table(run.run_dir)
    assert q.shape == (6, 2) and q.dtype == np.float64 and np.abs(q).sum() > 0
    fig = plot_run(run.run_dir)
    assert "q_learning" in fig.axes[0].get_title()
