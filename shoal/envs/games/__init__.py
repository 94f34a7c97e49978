"""Two-player board games (tic-tac-toe, Connect Four, Gomoku 9x9) for search-based agents.

They are not Gymnasium environments: two players alternate and the agent searches a tree
of copies. Their short names (``tictactoe``, ``connect4``, ``gomoku9``) serve as env ids
for the algorithms that play games (``shoal train alphazero --env connect4``).
"""

from __future__ import annotations

from shoal.envs.games.base import Game, IllegalMoveError
from shoal.errors import EnvError

#: Short name -> "module:Class" (loaded when a game is made).
GAME_IDS: dict[str, str] = {
    "tictactoe": "shoal.envs.games.grid:TicTacToe",
    "connect4": "shoal.envs.games.connect4:ConnectFour",
    "gomoku9": "shoal.envs.games.grid:Gomoku9",
}


def is_game(env_id: object) -> bool:
    """Whether ``env_id`` names one of the board games."""
    return isinstance(env_id, str) and game_name(env_id) in GAME_IDS


def game_name(env_id: str) -> str:
    """The short name of a game id (a ``shoal/`` prefix is accepted)."""
    return env_id.split("/", 1)[1] if env_id.startswith("shoal/") else env_id


def game_class(env_id: str) -> type[Game]:
    """The class of game ``env_id``, or an EnvError listing the games."""
    import importlib

    name = game_name(env_id)
    if name not in GAME_IDS:
        raise EnvError(f"unknown game {env_id!r}; use one of {', '.join(GAME_IDS)}")
    mod, _, cls = GAME_IDS[name].partition(":")
    return getattr(importlib.import_module(mod), cls)


def make_game(env_id: str) -> Game:
    """A new game at its start position."""
    return game_class(env_id)()


__all__ = ["GAME_IDS", "Game", "IllegalMoveError", "game_class", "game_name", "is_game", "make_game"]
