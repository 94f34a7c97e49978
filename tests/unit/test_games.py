"""Rules of the board games: wins on rows, columns and diagonals, draws, illegal moves, symmetries."""

from __future__ import annotations

import numpy as np
import pytest

from shoal.envs.games import GAME_IDS, IllegalMoveError, is_game, make_game


def _legal_from_planes(name: str, planes: np.ndarray) -> np.ndarray:
    occupied = (planes[0] + planes[1]) > 0
    if name == "connect4":
        return ~occupied[0]  # a column is open while its top cell is empty
    return ~occupied.reshape(-1)


@pytest.mark.parametrize("moves, winner", [
    ([0, 3, 1, 4, 2], 1),            # top row
    ([0, 1, 3, 2, 6], 1),            # left column
    ([0, 1, 4, 2, 8], 1),            # main diagonal
    ([0, 2, 1, 4, 3, 6], -1),        # anti-diagonal for the second player
])
def test_tictactoe_wins(moves: list[int], winner: int) -> None:
    g = make_game("tictactoe").play_all(moves)
    assert g.is_terminal() and g.winner == winner
    assert g.terminal_value() == -1.0  # the side to move lost
    assert not g.legal_mask().any()
    with pytest.raises(IllegalMoveError, match="over"):
        g.play(int(np.flatnonzero(g.board.reshape(-1) == 0)[0]))


def test_tictactoe_draw_and_illegal_moves() -> None:
    g = make_game("tictactoe").play_all([0, 1, 2, 4, 3, 5, 7, 6, 8])
    assert g.is_terminal() and g.winner == 0 and g.terminal_value() == 0.0
    g = make_game("tictactoe").play_all([4])
    with pytest.raises(IllegalMoveError, match="not legal"):
        g.play(4)
    with pytest.raises(IllegalMoveError):
        g.play(9)
    assert g.history == [4] and g.to_play == -1


def test_connect4_gravity_and_wins() -> None:
    g = make_game("connect4").play_all([3, 3])
    assert g.board[5, 3] == 1 and g.board[4, 3] == -1
    assert make_game("connect4").play_all([0, 6, 1, 6, 2, 6, 3]).winner == 1            # bottom row
    assert make_game("connect4").play_all([0, 1, 0, 1, 0, 1, 0]).winner == 1            # column
    # rising diagonal (0,5) (1,4) (2,3) (3,2) for the first player
    g = make_game("connect4").play_all([0, 1, 1, 2, 2, 3, 2, 3, 3, 6, 3])
    assert g.is_terminal() and g.winner == 1
    # falling diagonal (2,0) (3,1) (4,2) (5,3), rows counted from the top
    g = make_game("connect4").play_all([3, 2, 2, 1, 6, 1, 1, 0, 0, 0])
    assert not g.is_terminal()
    g.play(0)
    assert g.winner == 1 and g.board[2, 0] == 1


def test_connect4_full_column_and_draw() -> None:
    g = make_game("connect4").play_all([0] * 6)
    assert not g.legal_mask()[0] and g.legal_mask()[1:].all()
    with pytest.raises(IllegalMoveError):
        g.play(0)
    # a full board without four in a row: columns filled in the pattern 0,1 / 2,3 / 4,5 pairs then 6
    moves = []
    for pair in ((0, 1), (2, 3), (4, 5)):
        for k in range(6):
            a, b = pair if k < 3 else pair[::-1]
            moves += [a, b]
    moves += [6] * 6
    g = make_game("connect4")
    for m in moves:
        assert not g.is_terminal()
        g.play(m)
    assert g.is_terminal() and g.winner == 0 and g.terminal_value() == 0.0


def test_gomoku_five_in_a_row() -> None:
    g = make_game("gomoku9")
    for i in range(4):
        g.play(40 + i)          # row 4, cols 4..7
        g.play(i)               # row 0
    assert not g.is_terminal()
    g.play(44)                  # (4, 8): five in row 4
    assert g.winner == 1
    g = make_game("gomoku9")
    for i in range(4):          # diagonal (i, i) for the first player, the second plays on the last row
        g.play(i * 10)
        g.play(72 + i)
    assert not g.is_terminal()
    g.play(40)
    assert g.winner == 1
    g = make_game("gomoku9")
    for i in range(4):          # a column for the second player
        g.play(80 - i)
        g.play(i * 9)
    g.play(50)
    g.play(36)
    assert g.winner == -1 and g.terminal_value() == -1.0


@pytest.mark.parametrize("name", list(GAME_IDS))
def test_symmetries_map_legal_moves_to_legal_moves(name: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = make_game(name)
        for _ in range(int(rng.integers(0, 6))):
            if g.is_terminal():
                break
            g.play(int(rng.choice(g.legal_actions())))
        planes = g.planes()
        legal = g.legal_mask() if not g.is_terminal() else _legal_from_planes(name, planes)
        assert np.array_equal(_legal_from_planes(name, planes), legal)
        pi = rng.random(g.num_actions).astype(np.float32) * legal
        syms = g.symmetries(planes, pi)
        assert len(syms) == (2 if name == "connect4" else 8)
        assert np.array_equal(syms[0][0], planes) and np.array_equal(syms[0][1], pi)
        for perm, (p2, pi2) in zip(g.action_permutations(), syms):
            legal2 = _legal_from_planes(name, p2)
            assert np.array_equal(legal2[perm], legal)       # legal a <-> legal perm[a]
            assert np.allclose(pi2[perm], pi) and pi2.sum() == pytest.approx(pi.sum())
            assert (pi2[~legal2] == 0).all()
        # distinct symmetries of an asymmetric position give distinct planes
        if name != "connect4" and len(g.history) == 1 and g.history[0] == 1:
            assert len({p.tobytes() for p, _ in syms}) == 4


def test_planes_are_from_the_side_to_move_and_copy_is_independent() -> None:
    g = make_game("tictactoe").play_all([4])
    p = g.planes()
    assert p[0].sum() == 0 and p[1][1, 1] == 1 and p[2].max() == 0
    c = g.copy()
    c.play(0)
    assert g.history == [4] and g.board[0, 0] == 0 and c.board[0, 0] == -1
    c4 = make_game("connect4").play_all([2])
    d = c4.copy()
    d.play_all([2] * 5)
    assert c4.legal_mask()[2] and not d.legal_mask()[2]


def test_short_names_are_game_ids() -> None:
    assert all(is_game(n) for n in ("tictactoe", "connect4", "gomoku9", "shoal/connect4"))
    assert not is_game("CartPole-v1")
