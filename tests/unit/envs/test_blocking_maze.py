"""The blocking maze of Sutton & Barto's Figure 8.4, cell by cell, and its wall moving after 1,000 steps."""

from __future__ import annotations

import gymnasium as gym
import pytest

import shoal  # noqa: F401  (registers the shoal/ ids)
from shoal.envs.toy import BlockingMaze
from shoal.envs.toy.blocking_maze import BLOCKING_LAYOUT_AFTER, BLOCKING_LAYOUT_BEFORE
from shoal.envs.toy.maze import shortest_path_length

ROWS, COLS = 6, 9
START, GOAL = (5, 3), (0, 8)
WALL_BEFORE = {(3, c) for c in range(0, 8)}  # the gap is column 8, on the right
WALL_AFTER = {(3, c) for c in range(1, 9)}  # the gap is column 0, on the left
UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
MOVES = {UP: (-1, 0), RIGHT: (0, 1), DOWN: (1, 0), LEFT: (0, -1)}


def _expected(cell: tuple[int, int], action: int, wall: set[tuple[int, int]]) -> tuple[int, float, bool]:
    r, c = cell[0] + MOVES[action][0], cell[1] + MOVES[action][1]
    if not (0 <= r < ROWS and 0 <= c < COLS) or (r, c) in wall:
        r, c = cell
    return r * COLS + c, float((r, c) == GOAL), (r, c) == GOAL


def test_the_layouts_are_the_books_cell_by_cell() -> None:
    for layout, wall in ((BLOCKING_LAYOUT_BEFORE, WALL_BEFORE), (BLOCKING_LAYOUT_AFTER, WALL_AFTER)):
        assert len(layout) == ROWS and all(len(row) == COLS for row in layout)
        for r in range(ROWS):
            for c in range(COLS):
                want = "#" if (r, c) in wall else "S" if (r, c) == START else "T" if (r, c) == GOAL else "."
                assert layout[r][c] == want, (r, c)
    assert shortest_path_length(BLOCKING_LAYOUT_BEFORE) == 10  # right of the wall
    assert shortest_path_length(BLOCKING_LAYOUT_AFTER) == 16  # round its left end


@pytest.mark.parametrize("moved", [False, True])
def test_every_move_from_every_cell(moved: bool) -> None:
    wall = WALL_AFTER if moved else WALL_BEFORE
    env = BlockingMaze(change_at=0 if moved else 10_000)
    for r in range(ROWS):
        for c in range(COLS):
            if (r, c) in wall:
                continue
            for action in MOVES:
                env.reset()
                env.state = r * COLS + c
                obs, reward, terminated, truncated, _ = env.step(action)
                assert (obs, reward, terminated) == _expected((r, c), action, wall), ((r, c), action)
                assert not truncated


def test_the_wall_moves_after_1000_steps_across_episodes() -> None:
    env = BlockingMaze()
    obs, _ = env.reset(seed=0)
    assert obs == START[0] * COLS + START[1] == 48
    for i in range(993):  # down from the bottom row: stays put; a reset now and then does not restart the count
        if i % 300 == 0:
            env.reset()
        assert env.step(DOWN)[0] == 48
    for action in (RIGHT,) * 5 + (UP,):  # to (4, 8), below the right-hand gap: 999 steps
        obs, *_ = env.step(action)
    assert obs == 4 * COLS + 8 and env.lifetime_steps == 999 and not env.changed
    assert env.step(UP)[0] == 3 * COLS + 8  # step 1,000 still has the gap on the right
    assert env.lifetime_steps == 1000 and env.changed
    assert env.step(DOWN)[0] == 4 * COLS + 8  # standing in the gap as it closed, the agent steps out of it
    assert env.step(UP)[0] == 4 * COLS + 8  # step 1,002: closed
    env.reset()
    for action in (LEFT,) * 3 + (UP,):  # (4, 0), below the new gap
        obs, *_ = env.step(action)
    assert obs == 4 * COLS + 0
    assert env.step(UP)[0] == 3 * COLS + 0  # open now
    assert "".join(env.grid_layout()[3]) == ".########"


def test_registered_id() -> None:
    env = gym.make("shoal/BlockingMaze-v0")
    assert env.observation_space == gym.spaces.Discrete(54) and env.action_space == gym.spaces.Discrete(4)
    assert env.spec is not None and env.spec.max_episode_steps == 10_000
    obs, _ = env.reset(seed=0)
    assert obs == 48
    env.close()
    with pytest.raises(ValueError, match="change_at"):
        BlockingMaze(change_at=-1)


def test_the_moved_id_has_the_second_layout_from_its_first_step() -> None:
    env = gym.make("shoal/BlockingMazeMoved-v0")
    assert env.spec is not None and env.spec.max_episode_steps == 10_000
    assert env.reset(seed=0)[0] == 48 and env.unwrapped.changed
    assert ["".join(row) for row in env.unwrapped.grid_layout()] == list(BLOCKING_LAYOUT_AFTER)
    for action in (LEFT,) * 3 + (UP,) * 3:  # through the left-hand gap at once
        obs, *_ = env.step(action)
    assert obs == 2 * COLS + 0
    env.close()


def test_the_shipped_dyna_q_run_is_evaluated_on_the_moved_wall() -> None:
    from shoal.run.resolve import resolve

    cfg = resolve("dyna_q", "shoal/BlockingMaze-v0", "shoal/BlockingMaze-v0", None, {}, {})
    assert cfg.run.steps == 3000 > BlockingMaze().change_at  # the run ends past the move ...
    assert cfg.run.eval_env == "shoal/BlockingMazeMoved-v0"  # ... so its evaluation meets the maze as it is then


def test_q_table_rendering_knows_the_maze() -> None:
    from shoal.agents.tabular.render import grid_info

    info = grid_info("shoal/BlockingMaze-v0")
    assert info is not None and info.shape == (ROWS, COLS)
    assert ["".join(row) for row in info.cells] == list(BLOCKING_LAYOUT_BEFORE)
