"""Games played by filling any empty cell of a square board: tic-tac-toe and Gomoku."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from shoal.envs.games.base import Game, grid_permutations


class CellGame(Game):
    """Actions are the cells ``row * cols + col`` from the top-left; any empty cell is legal."""

    _transforms: ClassVar[list[tuple[int, bool]]]
    _perms: ClassVar[list[np.ndarray]]

    def legal_mask(self) -> np.ndarray:
        if self._terminal:
            return np.zeros(self.num_actions, dtype=bool)
        return (self.board == 0).reshape(-1)

    def _cell(self, action: int) -> tuple[int, int]:
        return divmod(action, self.cols)

    def action_permutations(self) -> list[np.ndarray]:
        return type(self)._perms

    def board_transforms(self) -> list[tuple[int, bool]]:
        return type(self)._transforms

    def render(self) -> str:
        sym = {1: "X", -1: "O", 0: "."}
        w = len(str(self.num_actions - 1))
        head = "    " + " ".join(f"{c:>{w}}" for c in range(self.cols))
        lines = [head]
        for r in range(self.rows):
            lines.append(f"{r * self.cols:>{w + 1}}  " + " ".join(f"{sym[int(v)]:>{w}}" for v in self.board[r]))
        return "\n".join(lines)


class TicTacToe(CellGame):
    """Tic-tac-toe: 3x3, three in a row; action ``row * 3 + col``."""

    name = "tictactoe"
    rows = cols = 3
    num_actions = 9
    connect = 3
    _transforms, _perms = grid_permutations(3, 3)


class Gomoku9(CellGame):
    """Gomoku on 9x9: five (or more) in a row wins; action ``row * 9 + col``."""

    name = "gomoku9"
    rows = cols = 9
    num_actions = 81
    connect = 5
    _transforms, _perms = grid_permutations(9, 9)
