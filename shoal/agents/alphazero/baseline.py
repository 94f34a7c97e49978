"""The search baseline: UCT with random rollouts and MCTS-Solver (Winands et al. 2008).

Each simulation descends by UCB1 (``Q + c sqrt(ln N_parent / N)``, ``c = 2``), adds one
child, plays one uniformly random rollout from it and backs the result up. Terminal
positions are proven; a node with a child proven lost for the opponent is a proven win,
one whose children are all proven is worth the best of them, and proven values travel up
the tree in place of rollout averages.
"""

from __future__ import annotations

import math

import numpy as np

from shoal.envs.games import Game

_UNKNOWN = 2.0  # marker: not proven


class _UNode:
    __slots__ = ("actions", "N", "W", "children", "proven", "child_proven", "untried")

    def __init__(self, game: Game, rng: np.random.Generator) -> None:
        self.actions = game.legal_actions()
        k = len(self.actions)
        self.N = np.zeros(k)
        self.W = np.zeros(k)
        self.children: list[_UNode | None] = [None] * k
        self.child_proven = np.full(k, _UNKNOWN)  # proven value of each child for THIS node's side to move
        self.proven = _UNKNOWN                     # this node's proven value for its side to move
        self.untried = list(rng.permutation(k))


class MCTSSolver:
    """UCT with random rollouts and proven wins/losses; ``select_action(game)`` searches afresh each move."""

    def __init__(self, simulations: int = 1000, c: float = 2.0, seed: int = 0) -> None:
        self.simulations, self.c = int(simulations), float(c)
        self.rng = np.random.default_rng(seed)

    def select_action(self, game: Game) -> int:
        """The move after ``simulations`` simulations: a proven win, else the most visited move not proven lost."""
        root = self.search(game)
        return self.best(root)

    def search(self, game: Game) -> _UNode:
        """Run the simulations from ``game``; returns the root."""
        root = _UNode(game, self.rng)
        for _ in range(self.simulations):
            if root.proven != _UNKNOWN:
                break
            self._simulate(root, game.copy())
        return root

    @staticmethod
    def best(root: _UNode) -> int:
        """The move to play from a searched root."""
        wins = np.flatnonzero(root.child_proven == 1.0)
        if len(wins):
            return int(root.actions[wins[0]])
        ok = root.child_proven != -1.0
        if not ok.any():
            ok[:] = True  # every move loses: play the one searched most
        score = np.where(ok, root.N + np.where(root.child_proven == 0.0, 0.5, 0.0), -1.0)
        return int(root.actions[int(np.argmax(score))])

    def _simulate(self, root: _UNode, game: Game) -> None:
        path: list[tuple[_UNode, int]] = []
        node = root
        value: float
        while True:
            if node.untried:
                i = int(node.untried.pop())
                game.play(int(node.actions[i]))
                path.append((node, i))
                if game.is_terminal():
                    value = game.terminal_value()
                    node.child_proven[i] = -value
                else:
                    node.children[i] = _UNode(game, self.rng)
                    value = self._rollout(game)
                break
            i = self._ucb(node)
            path.append((node, i))
            game.play(int(node.actions[i]))
            if node.child_proven[i] != _UNKNOWN:
                value = -node.child_proven[i]  # the child's value for its own side to move
                break
            child = node.children[i]
            assert child is not None
            node = child
        self._backup(path, value)

    def _ucb(self, node: _UNode) -> int:
        q = node.W / node.N
        score = q + self.c * np.sqrt(math.log(node.N.sum()) / node.N)
        score[node.child_proven == -1.0] = -np.inf  # never walk into a proven loss while another move remains
        score[node.child_proven == 1.0] = np.inf
        return int(np.argmax(score))

    def _rollout(self, game: Game) -> float:
        """Random moves to the end; the outcome for the side to move at the start."""
        me = game.to_play
        rng = self.rng
        while not game.is_terminal():
            legal = game.legal_actions()
            game.play(int(legal[rng.integers(len(legal))]))
        return float(game.winner * me)

    def _backup(self, path: list[tuple[_UNode, int]], value: float) -> None:
        """``value`` is for the side to move after the last edge; proofs are passed up while they hold."""
        proving = True
        for node, i in reversed(path):
            value = -value
            node.N[i] += 1
            node.W[i] += value
            if not proving:
                continue
            if node.children[i] is not None and node.children[i].proven != _UNKNOWN:  # type: ignore[union-attr]
                node.child_proven[i] = -node.children[i].proven  # type: ignore[union-attr]
            if node.child_proven[i] == 1.0:
                node.proven = 1.0
            elif not node.untried and (node.child_proven != _UNKNOWN).all():
                node.proven = float(node.child_proven.max())
            else:
                proving = False
