"""Measuring an agent's strength against the baselines: MCTS-Solver, perfect play, random."""

from __future__ import annotations

from typing import Callable

from shoal.agents.alphazero.baseline import MCTSSolver
from shoal.agents.alphazero.minimax import MinimaxPlayer
from shoal.agents.alphazero.player import Player, RandomPlayer, match
from shoal.envs.games import Game


def baselines(game_name: str, simulations: int, seed: int) -> dict[str, Player]:
    """The opponents a game is measured against: MCTS-Solver at ``simulations``, random, and minimax where it is exact."""
    out: dict[str, Player] = {f"solver{simulations}": MCTSSolver(simulations, seed=seed), "random": RandomPlayer(seed)}
    if game_name == "tictactoe":
        out["minimax"] = MinimaxPlayer(seed)
    return out


def measure(new_game: Callable[[], Game], player: Player, opponents: dict[str, Player], games: int) -> dict[str, dict[str, float]]:
    """A match of ``games`` games (colours alternated) against each opponent."""
    return {name: match(new_game, player, opp, games) for name, opp in opponents.items()}


def primary_baseline(game_name: str, results: dict[str, dict[str, float]]) -> str:
    """The baseline whose score stands for the agent's strength: minimax at tic-tac-toe, else MCTS-Solver."""
    if game_name == "tictactoe" and "minimax" in results:
        return "minimax"
    return next(k for k in results if k.startswith("solver"))
