"""Everything AlphaZero builds for one game: networks, self-play, learner, players."""

from __future__ import annotations

from typing import Any

from shoal.agents.alphazero.config import AlphaZeroConfig
from shoal.agents.alphazero.learner import AlphaZeroLearner
from shoal.agents.alphazero.networks import NetworkEvaluator, PolicyValueNet, make_network
from shoal.agents.alphazero.player import SearchPlayer
from shoal.agents.alphazero.selfplay import SelfPlayer
from shoal.envs.games import Game, game_class, is_game
from shoal.errors import ConfigError


class AlphaZeroBuilder:
    """Builds AlphaZero's pieces for the game ``env`` (a short name: tictactoe, connect4, gomoku9)."""

    def __init__(self, config: AlphaZeroConfig, env: Any, *args: Any, **kwargs: Any) -> None:
        game_id = env if isinstance(env, str) else getattr(env, "env_id", None)
        if not is_game(game_id):
            raise ConfigError(f"alphazero plays two-player board games, not {game_id!r}; "
                              "use --env tictactoe, connect4 or gomoku9")
        assert isinstance(game_id, str)
        self.config, self.game_id = config, game_id
        self.game_cls = game_class(game_id)

    def new_game(self) -> Game:
        """The start position."""
        return self.game_cls()

    def make_networks(self) -> PolicyValueNet:
        """A freshly initialised network for this game."""
        g = self.game_cls
        return make_network(self.config, g.num_planes, g.rows, g.cols, g.num_actions)

    def make_learner(self, net: PolicyValueNet, seed: int) -> AlphaZeroLearner:
        """The learner training ``net`` from its own replay table."""
        return AlphaZeroLearner(net, self.config, seed)

    def make_selfplayer(self, seed: int) -> SelfPlayer:
        """A self-play worker playing ``games_per_actor`` games at once."""
        return SelfPlayer(self.new_game, self.config, seed)

    def make_player(self, net: PolicyValueNet, simulations: int | None = None) -> SearchPlayer:
        """The deterministic engine: PUCT with ``simulations`` (default: the engine's recorded size), no noise."""
        c = self.config
        return SearchPlayer(NetworkEvaluator(net), simulations or c.engine_simulations, c.c_puct, c.leaf_batch,
                            c.virtual_loss)
