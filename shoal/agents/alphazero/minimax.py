"""A perfect player for small games: negamax over every position, memoised."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from shoal.envs.games import Game


class MinimaxPlayer:
    """Plays a game-theoretically optimal move, chosen at random among the optimal ones.

    Exhaustive: meant for tic-tac-toe (5,478 positions); larger games take far too long.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self._memo: dict[tuple[bytes, int], float] = {}

    def value(self, game: Game) -> float:
        """The value of ``game`` for its side to move under perfect play (+1 win, 0 draw, -1 loss)."""
        if game.is_terminal():
            return game.terminal_value()
        key = (game.board.tobytes(), game.to_play)
        v = self._memo.get(key)
        if v is None:
            v = max(-self.value(_after(game, int(a))) for a in game.legal_actions())
            self._memo[key] = v
        return v

    def move_values(self, game: Game) -> dict[int, float]:
        """The value of each legal move for the side to move."""
        return {int(a): -self.value(_after(game, int(a))) for a in game.legal_actions()}

    def select_action(self, game: Game) -> int:
        """A uniformly random optimal move."""
        values = self.move_values(game)
        best = max(values.values())
        choices = [a for a, v in values.items() if v == best]
        return int(choices[int(self.rng.integers(len(choices)))])


def _after(game: Game, action: int) -> Game:
    g = game.copy()
    g.play(action)
    return g


def losing_lines(player: Any, new_game: Callable[[], Game], perfect: MinimaxPlayer | None = None) -> dict[str, list[list[int]]]:
    """Every game a deterministic ``player`` loses against some choice of optimal moves, per side.

    The opponent branches over all of its optimal moves (the ones :class:`MinimaxPlayer` picks
    among), the player answers each position once: ``{"first": [...], "second": [...]}`` lists
    the move histories of the lost games (empty lists: the player never loses to perfect play).
    """
    perfect = perfect or MinimaxPlayer()
    cache: dict[tuple[int, ...], int] = {}
    out: dict[str, list[list[int]]] = {"first": [], "second": []}
    for side, me in (("first", 1), ("second", -1)):
        stack = [new_game()]
        while stack:
            g = stack.pop()
            if g.is_terminal():
                if g.winner == -me:
                    out[side].append(list(g.history))
                continue
            if g.to_play == me:
                key = tuple(g.history)
                if key not in cache:
                    cache[key] = int(player.select_action(g))
                stack.append(_after(g, cache[key]))
            else:
                values = perfect.move_values(g)
                best = max(values.values())
                stack.extend(_after(g, a) for a, v in values.items() if v == best)
    return out
