"""Self-play: many games at once, their trees' leaves evaluated by one network call per round.

Each game keeps its tree from move to move. A move is searched until its root holds
``simulations`` visits, then chosen from the visit counts (temperature 1 for the first
``temperature_moves`` moves, the most visited after). A finished game yields one training
item per position (board planes, search policy, outcome for the side to move), and with
``augment`` every symmetric copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from shoal.agents.alphazero.config import AlphaZeroConfig
from shoal.agents.alphazero.mcts import MCTS, Evaluator, Leaf, leaf_inputs, visit_policy
from shoal.envs.games import Game


@dataclass
class _Record:
    planes: list[np.ndarray] = field(default_factory=list)
    pis: list[np.ndarray] = field(default_factory=list)
    players: list[int] = field(default_factory=list)


@dataclass
class SelfPlayResult:
    """Training items of finished games and what happened."""

    items: dict[str, np.ndarray]
    positions: int                  # moves played (before augmentation)
    games: int
    outcomes: list[int]             # winner of each finished game: +1 first player, -1 second, 0 draw
    lengths: list[int]
    network_calls: int
    leaf_evaluations: int


def best_action(tree: MCTS) -> int:
    """The most visited root action; the network's prior breaks ties (and decides with no visits)."""
    root = tree.root
    order = np.lexsort((-root.prior, -root.N))  # most visits first, then the highest prior
    return int(root.actions[order[0]])


class SelfPlayer:
    """Plays ``cfg.games_per_actor`` games of ``new_game()`` at once against itself."""

    def __init__(self, new_game: Callable[[], Game], cfg: AlphaZeroConfig, seed: int) -> None:
        self.new_game, self.cfg = new_game, cfg
        self.rng = np.random.default_rng(seed)
        self.trees = [self._tree() for _ in range(cfg.games_per_actor)]
        self.records = [_Record() for _ in self.trees]

    def _tree(self) -> MCTS:
        c = self.cfg
        return MCTS(self.new_game(), c.c_puct, c.virtual_loss, c.dirichlet_alpha, c.noise_frac, self.rng)

    def play(self, evaluate: Evaluator, min_games: int = 1, max_moves: int = 0) -> SelfPlayResult:
        """Play until ``min_games`` games finished (or ``max_moves`` moves, when > 0); unfinished games carry over."""
        c = self.cfg
        out_planes: list[np.ndarray] = []
        out_pis: list[np.ndarray] = []
        out_z: list[float] = []
        outcomes: list[int] = []
        lengths: list[int] = []
        moves = calls = evals = 0
        while len(outcomes) < min_games and not (max_moves and moves >= max_moves):
            leaves: list[Leaf] = []
            owners: list[int] = []
            for k, tree in enumerate(self.trees):
                want = 1 if not tree.root.expanded else int(min(c.leaf_batch, c.simulations - 1 - tree.root.N.sum()))
                if want <= 0:  # a reused subtree may already hold enough visits
                    continue
                got = tree.select_leaves(want)
                leaves += got
                owners += [k] * len(got)
            if leaves:
                planes, masks = leaf_inputs(leaves)
                priors, values = evaluate(planes, masks)
                calls += 1
                evals += len(leaves)
                for k in sorted(set(owners)):
                    rows = [i for i, o in enumerate(owners) if o == k]
                    self.trees[k].deliver([leaves[i] for i in rows], priors[rows], values[rows])
            for k, tree in enumerate(self.trees):
                if not tree.root.expanded or tree.root.N.sum() < c.simulations - 1:  # the root's own evaluation counts
                    continue
                if max_moves and moves >= max_moves:
                    break  # the searched tree moves in the next call
                rec, game = self.records[k], tree.game
                temp = 1.0 if len(game.history) < c.temperature_moves else 0.0
                pi = tree.policy(1.0)  # the training target: visit counts at temperature 1
                action = best_action(tree) if temp == 0.0 else int(self.rng.choice(len(pi), p=visit_policy(tree.visits(), temp)))
                rec.planes.append(game.planes())
                rec.pis.append(pi.astype(np.float32))
                rec.players.append(game.to_play)
                tree.advance(action)
                moves += 1
                if tree.game.is_terminal():
                    winner = tree.game.winner
                    for p, pol, who in zip(rec.planes, rec.pis, rec.players):
                        pairs = game.symmetries(p, pol) if c.augment else [(p, pol)]
                        for sp, spi in pairs:
                            out_planes.append(sp)
                            out_pis.append(spi)
                            out_z.append(float(winner * who))
                    outcomes.append(winner)
                    lengths.append(len(tree.game.history))
                    self.trees[k], self.records[k] = self._tree(), _Record()
        g0 = self.new_game()
        items = {"planes": np.asarray(out_planes, np.float32).reshape(-1, g0.num_planes, g0.rows, g0.cols),
                 "pi": np.asarray(out_pis, np.float32).reshape(-1, g0.num_actions),
                 "z": np.asarray(out_z, np.float32)}
        return SelfPlayResult(items, moves, len(outcomes), outcomes, lengths, calls, evals)
