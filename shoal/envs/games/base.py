"""The interface of two-player, zero-sum, perfect-information games.

A :class:`Game` holds one position: a small numpy board (``+1`` stones of the first
player, ``-1`` of the second, ``0`` empty), whose turn it is, and the move history.
Values are from the point of view of the side to move; the first player moves first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Iterable

import numpy as np

from shoal.errors import ShoalError

#: Lines through a cell: (d_row, d_col) for rows, columns and both diagonals.
DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))


class IllegalMoveError(ShoalError):
    """A move that the rules do not allow in this position."""


class Game(ABC):
    """One position of a board game; ``copy()`` is cheap (one small array and a list)."""

    name: ClassVar[str]
    rows: ClassVar[int]
    cols: ClassVar[int]
    num_actions: ClassVar[int]
    #: Stones in a row that win.
    connect: ClassVar[int]
    #: Input planes of :meth:`planes`: side to move's stones, the opponent's, and a plane of ones when the first player moves.
    num_planes: ClassVar[int] = 3

    def __init__(self) -> None:
        self.board = np.zeros((self.rows, self.cols), dtype=np.int8)
        self.to_play = 1  # +1: the first player moves; -1: the second
        self.history: list[int] = []
        self.winner = 0  # +1 / -1 once someone has won, 0 otherwise
        self._terminal = False

    # -- rules a game supplies --------------------------------------------------------------
    @abstractmethod
    def legal_mask(self) -> np.ndarray:
        """Boolean ``[num_actions]``: which actions are legal now (all False when the game is over)."""

    @abstractmethod
    def _cell(self, action: int) -> tuple[int, int]:
        """The board cell a legal ``action`` fills (a game may update its own book-keeping for the move here)."""

    @abstractmethod
    def action_permutations(self) -> list[np.ndarray]:
        """One integer array per board symmetry (identity first): ``perm[a]`` is the image of action ``a``."""

    @abstractmethod
    def board_transforms(self) -> list[tuple[int, bool]]:
        """The symmetries as ``(quarter turns, flip left-right first)``, in :meth:`action_permutations` order."""

    # -- shared -----------------------------------------------------------------------------
    def legal_actions(self) -> np.ndarray:
        """Indices of the legal actions, ascending."""
        return np.flatnonzero(self.legal_mask())

    def is_legal(self, action: int) -> bool:
        """Whether ``action`` may be played now."""
        return 0 <= action < self.num_actions and bool(self.legal_mask()[action])

    def play(self, action: int) -> None:
        """Play ``action`` for the side to move; an :class:`IllegalMoveError` if the rules refuse it."""
        action = int(action)
        if self._terminal:
            raise IllegalMoveError(f"the game is over; move {action} cannot be played")
        if not self.is_legal(action):
            raise IllegalMoveError(f"move {action} is not legal here; legal moves: {' '.join(map(str, self.legal_actions()))}")
        r, c = self._cell(action)
        self.board[r, c] = self.to_play
        self.history.append(action)
        if self._wins_through(r, c):
            self.winner = self.to_play
            self._terminal = True
        elif len(self.history) == self.rows * self.cols:
            self._terminal = True
        self.to_play = -self.to_play

    def play_all(self, actions: Iterable[int]) -> "Game":
        """Play a sequence of moves; returns self."""
        for a in actions:
            self.play(a)
        return self

    def _wins_through(self, r: int, c: int) -> bool:
        b, me, n = self.board, self.board[r, c], self.connect
        for dr, dc in DIRECTIONS:
            count = 1
            for sign in (1, -1):
                rr, cc = r + sign * dr, c + sign * dc
                while 0 <= rr < self.rows and 0 <= cc < self.cols and b[rr, cc] == me:
                    count += 1
                    rr += sign * dr
                    cc += sign * dc
            if count >= n:
                return True
        return False

    def is_terminal(self) -> bool:
        """Whether the game is over (a win or a full board)."""
        return self._terminal

    def terminal_value(self) -> float:
        """The outcome for the side to move of a finished game: -1 lost (the last mover won), 0 drawn."""
        if not self._terminal:
            raise ShoalError("terminal_value() asked of a game that is not over; check is_terminal() first")
        return 0.0 if self.winner == 0 else float(self.winner * self.to_play)

    def planes(self) -> np.ndarray:
        """Float32 ``[num_planes, rows, cols]`` seen from the side to move (canonical form)."""
        out = np.zeros((self.num_planes, self.rows, self.cols), dtype=np.float32)
        out[0] = self.board == self.to_play
        out[1] = self.board == -self.to_play
        out[2] = 1.0 if self.to_play == 1 else 0.0
        return out

    def symmetries(self, planes: np.ndarray, pi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every symmetric copy ``(planes, pi)`` of a position's planes and an action distribution."""
        out = []
        for (turns, flip), perm in zip(self.board_transforms(), self.action_permutations()):
            p = planes[:, :, ::-1] if flip else planes
            p = np.rot90(p, turns, axes=(1, 2))
            q = np.zeros_like(pi)
            q[perm] = pi
            out.append((np.ascontiguousarray(p), q))
        return out

    def copy(self) -> "Game":
        """An independent copy of this position."""
        g = object.__new__(type(self))
        g.board = self.board.copy()
        g.to_play, g.history, g.winner, g._terminal = self.to_play, list(self.history), self.winner, self._terminal
        return g

    def render(self) -> str:
        """The board as text: X moves first, O second, with the action numbers around it."""
        sym = {1: "X", -1: "O", 0: "."}
        return "\n".join(" ".join(sym[int(v)] for v in row) for row in self.board)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(history={self.history})"


def grid_permutations(rows: int, cols: int) -> tuple[list[tuple[int, bool]], list[np.ndarray]]:
    """The 8 symmetries of a square board whose actions are its cells (``row * cols + col``)."""
    idx = np.arange(rows * cols).reshape(rows, cols)
    transforms, perms = [], []
    for flip in (False, True):
        for turns in range(4):
            img = np.rot90(idx[:, ::-1] if flip else idx, turns)
            perm = np.empty(rows * cols, dtype=np.int64)
            perm[img.reshape(-1)] = np.arange(rows * cols)  # action img[p] lands on cell p
            transforms.append((turns, flip))
            perms.append(perm)
    return transforms, perms
