"""Connect Four: 6 rows x 7 columns, stones fall to the lowest empty row, four in a row wins."""

from __future__ import annotations

import numpy as np

from shoal.envs.games.base import Game

_PERMS = [np.arange(7), np.arange(7)[::-1].copy()]


class ConnectFour(Game):
    """Connect Four; action = the column 0-6 from the left, row 0 is the top of the board."""

    name = "connect4"
    rows, cols = 6, 7
    num_actions = 7
    connect = 4

    def __init__(self) -> None:
        super().__init__()
        self.heights = np.zeros(self.cols, dtype=np.int8)  # stones in each column

    def legal_mask(self) -> np.ndarray:
        if self._terminal:
            return np.zeros(self.num_actions, dtype=bool)
        return self.heights < self.rows

    def _cell(self, action: int) -> tuple[int, int]:
        r = self.rows - 1 - int(self.heights[action])
        self.heights[action] += 1  # _cell is only asked for the move being played
        return r, action

    def action_permutations(self) -> list[np.ndarray]:
        return _PERMS

    def board_transforms(self) -> list[tuple[int, bool]]:
        return [(0, False), (0, True)]

    def copy(self) -> "ConnectFour":
        g = super().copy()
        assert isinstance(g, ConnectFour)
        g.heights = self.heights.copy()
        return g

    def render(self) -> str:
        sym = {1: "X", -1: "O", 0: "."}
        rows = [" ".join(sym[int(v)] for v in row) for row in self.board]
        return "\n".join(rows + [" ".join(str(c) for c in range(self.cols))])
