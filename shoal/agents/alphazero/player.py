"""Players that pick moves in a game, and matches between them."""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from shoal.agents.alphazero.mcts import MCTS, Evaluator
from shoal.agents.alphazero.selfplay import best_action
from shoal.envs.games import Game


class Player(Protocol):
    """Anything that chooses a move for the side to move."""

    def select_action(self, game: Game) -> int: ...


class SearchPlayer:
    """PUCT search with a network, deterministic: no noise, temperature 0, a fresh tree for every move.

    With ``simulations=1`` only the root is evaluated and the policy head's favourite legal move is played.
    """

    def __init__(self, evaluate: Evaluator, simulations: int, c_puct: float = 1.5, leaf_batch: int = 8,
                 virtual_loss: float = 1.0) -> None:
        self.evaluate, self.simulations = evaluate, int(simulations)
        self.c_puct, self.leaf_batch, self.virtual_loss = c_puct, int(leaf_batch), virtual_loss
        self.network_calls = 0
        self.leaf_evaluations = 0

    def select_action(self, game: Game) -> int:
        tree = MCTS(game, self.c_puct, self.virtual_loss, noise_frac=0.0)
        tree.search(self.evaluate, self.simulations, self.leaf_batch)
        self.network_calls += tree.network_calls
        self.leaf_evaluations += tree.leaf_evaluations
        return best_action(tree)


class RandomPlayer:
    """Uniformly random legal moves."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def select_action(self, game: Game) -> int:
        legal = game.legal_actions()
        return int(legal[self.rng.integers(len(legal))])


def play_game(new_game: Callable[[], Game], first: Player, second: Player) -> Game:
    """One game, ``first`` moving first; returns the finished game."""
    game = new_game()
    while not game.is_terminal():
        game.play((first if game.to_play == 1 else second).select_action(game))
    return game


def match(new_game: Callable[[], Game], player: Player, opponent: Player, games: int) -> dict[str, float]:
    """``games`` games with colours alternated (``player`` first in the even ones); its wins, draws, losses, score."""
    wins = draws = losses = 0
    for k in range(games):
        first, second = (player, opponent) if k % 2 == 0 else (opponent, player)
        g = play_game(new_game, first, second)
        mine = 1 if k % 2 == 0 else -1
        if g.winner == 0:
            draws += 1
        elif g.winner == mine:
            wins += 1
        else:
            losses += 1
    return {"games": float(games), "wins": float(wins), "draws": float(draws), "losses": float(losses),
            "score": (wins + 0.5 * draws) / max(games, 1)}
