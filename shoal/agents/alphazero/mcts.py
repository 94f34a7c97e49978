"""PUCT Monte-Carlo tree search (AlphaGo Zero / AlphaZero) with batched leaf evaluation.

Each node keeps its children's statistics in numpy arrays over the legal actions
(priors ``P``, visits ``N``, total values ``W``) rather than one object per edge. A
search step descends ``batch`` times from the root, choosing ``argmax Q + U`` with

    U(s, a) = c_puct * P(s, a) * sqrt(N(s)) / (1 + N(s, a)),

and marks each edge it takes with a virtual loss (one extra visit valued as a loss), so
the next descent of the same batch is steered to another leaf. The leaves are then
evaluated by one network call and the virtual losses are replaced by the real values.
Values are always from the point of view of the side to move at a node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from shoal.envs.games import Game


class Evaluator(Protocol):
    """A batched network: ``(planes [B, C, H, W], legal masks [B, A]) -> (priors [B, A], values [B])``."""

    def __call__(self, planes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class Node:
    """A position in the tree; its children's statistics are arrays over its legal actions."""

    __slots__ = ("actions", "P", "prior", "N", "W", "children", "expanded", "terminal", "value")

    def __init__(self) -> None:
        self.actions = np.zeros(0, dtype=np.int64)
        self.P = np.zeros(0)        # priors used for selection (noised at a self-play root)
        self.prior = np.zeros(0)    # the network's priors
        self.N = np.zeros(0)
        self.W = np.zeros(0)
        self.children: list[Node | None] = []
        self.expanded = False
        self.terminal = False
        self.value = 0.0            # the outcome of a terminal node, for its side to move

    def expand(self, actions: np.ndarray, priors: np.ndarray) -> None:
        """Give the node its legal ``actions`` and their ``priors`` (renormalised over them)."""
        p = np.asarray(priors, dtype=np.float64)
        total = p.sum()
        p = p / total if total > 0 else np.full(len(actions), 1.0 / max(len(actions), 1))
        self.actions = np.asarray(actions, dtype=np.int64)
        self.P, self.prior = p, p.copy()
        self.N = np.zeros(len(actions))
        self.W = np.zeros(len(actions))
        self.children = [None] * len(actions)
        self.expanded = True

    def q(self) -> np.ndarray:
        """Mean value of each child for this node's side to move (0 where unvisited)."""
        return np.divide(self.W, self.N, out=np.zeros_like(self.W), where=self.N > 0)


def puct_scores(node: Node, c_puct: float) -> np.ndarray:
    """``Q + c_puct P sqrt(N_parent) / (1 + N)`` of each child (``sqrt(1)`` before any visit, so the priors decide)."""
    n = node.N
    q = node.W / np.where(n > 0, n, 1.0)  # W is 0 where N is: unvisited children have Q = 0
    return q + (c_puct * math.sqrt(max(float(n.sum()), 1.0))) * node.P / (1.0 + n)


def select_child(node: Node, c_puct: float) -> int:
    """Index (into ``node.actions``) of the child PUCT selects; ties go to the lowest index."""
    return int(np.argmax(puct_scores(node, c_puct)))


@dataclass
class Leaf:
    """A leaf waiting for its network evaluation."""

    path: list[tuple[Node, int]]
    node: Node
    game: Game


class MCTS:
    """A search tree over one game, reusable move after move.

    Args:
        game: the root position (copied; :meth:`advance` plays moves on the copy).
        c_puct: exploration constant of PUCT.
        virtual_loss: visits (each valued -1) added to an edge while a descent through it awaits its evaluation.
        dirichlet_alpha, noise_frac: root noise ``P = (1 - frac) P + frac Dir(alpha)``; frac 0 disables it.
        rng: the generator of the noise.
    """

    def __init__(self, game: Game, c_puct: float = 1.5, virtual_loss: float = 1.0, dirichlet_alpha: float = 0.3,
                 noise_frac: float = 0.0, rng: np.random.Generator | None = None) -> None:
        self.game = game.copy()
        self.c_puct, self.virtual_loss = float(c_puct), float(virtual_loss)
        self.dirichlet_alpha, self.noise_frac = float(dirichlet_alpha), float(noise_frac)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.root = Node()
        self.leaf_evaluations = 0   # leaves sent to the network
        self.network_calls = 0

    # -- one batch of simulations ---------------------------------------------------------------
    def select_leaves(self, batch: int) -> list[Leaf]:
        """Descend ``batch`` times under virtual loss; terminal leaves are backed up at once, the rest returned.

        A leaf reached twice in one batch is returned twice (evaluated once, backed up along both paths).
        """
        leaves: list[Leaf] = []
        vl = self.virtual_loss
        for _ in range(batch):
            node, game, path = self.root, self.game.copy(), []
            while node.expanded and not node.terminal:
                i = select_child(node, self.c_puct)
                node.N[i] += vl
                node.W[i] -= vl
                path.append((node, i))
                game.play(int(node.actions[i]))
                child = node.children[i]
                if child is None:
                    child = node.children[i] = Node()
                    if game.is_terminal():
                        child.terminal, child.value = True, game.terminal_value()
                node = child
            if node.terminal:
                self._backup(path, node.value)
                continue
            leaves.append(Leaf(path, node, game))
        return leaves

    def deliver(self, leaves: list[Leaf], priors: np.ndarray, values: np.ndarray) -> None:
        """Expand each leaf with its ``priors [n, A]`` and back up its ``values [n]`` (side to move at the leaf)."""
        for leaf, p, v in zip(leaves, priors, values):
            node = leaf.node
            if not node.expanded:
                actions = leaf.game.legal_actions()
                node.expand(actions, p[actions])
                if node is self.root:
                    self._noise_root()
            self._backup(leaf.path, float(v))

    def _backup(self, path: list[tuple[Node, int]], value: float) -> None:
        vl = self.virtual_loss
        for node, i in reversed(path):
            value = -value  # the parent's side to move is the leaf's opponent, one level up at a time
            node.N[i] += 1.0 - vl
            node.W[i] += value + vl

    def search(self, evaluate: Evaluator, simulations: int, batch: int = 8) -> np.ndarray:
        """Run ``simulations`` more simulations in batches of ``batch``; returns the root's visit counts ``[A]``."""
        target = self.root.N.sum() + simulations
        if not self.root.expanded:
            self.run_batch(evaluate, 1)
            target -= 1
        while self.root.N.sum() < target and not self.game.is_terminal():
            self.run_batch(evaluate, int(min(batch, target - self.root.N.sum())))
        return self.visits()

    def run_batch(self, evaluate: Evaluator | Callable[..., tuple[np.ndarray, np.ndarray]], batch: int) -> None:
        """One batch: select leaves, evaluate them in one call, back them up."""
        leaves = self.select_leaves(batch)
        if leaves:
            planes, masks = leaf_inputs(leaves)
            priors, values = evaluate(planes, masks)
            self.network_calls += 1
            self.leaf_evaluations += len(leaves)
            self.deliver(leaves, priors, values)

    # -- the root ---------------------------------------------------------------------------------
    def _noise_root(self) -> None:
        root = self.root
        if self.noise_frac > 0 and len(root.actions) > 0:
            noise = self.rng.dirichlet(np.full(len(root.actions), self.dirichlet_alpha))
            root.P = (1 - self.noise_frac) * root.prior + self.noise_frac * noise
        else:
            root.P = root.prior.copy()

    def visits(self) -> np.ndarray:
        """Root visit counts over all actions ``[A]``."""
        out = np.zeros(self.game.num_actions)
        out[self.root.actions] = self.root.N
        return out

    def policy(self, temperature: float) -> np.ndarray:
        """The search policy ``pi ~ N^(1/T)``; temperature 0 puts all mass on the most visited action."""
        return visit_policy(self.visits(), temperature)

    def advance(self, action: int) -> None:
        """Play ``action`` at the root and keep the subtree below it (tree reuse); re-noise the new root."""
        action = int(action)
        child = None
        if self.root.expanded:
            hit = np.flatnonzero(self.root.actions == action)
            if len(hit):
                child = self.root.children[int(hit[0])]
        self.game.play(action)
        self.root = child if child is not None and not child.terminal else Node()
        if self.root.expanded:
            self._noise_root()


def visit_policy(visits: np.ndarray, temperature: float) -> np.ndarray:
    """``N^(1/T)`` normalised; at ``T = 0`` one-hot on the most visited action (lowest index on ties)."""
    if temperature <= 1e-6:
        out = np.zeros_like(visits, dtype=np.float64)
        out[int(np.argmax(visits))] = 1.0
        return out
    x = np.power(visits / max(visits.max(), 1e-12), 1.0 / temperature)
    return x / x.sum()


def leaf_inputs(leaves: list[Leaf]) -> tuple[np.ndarray, np.ndarray]:
    """The stacked planes and legal masks of ``leaves``."""
    return np.stack([lf.game.planes() for lf in leaves]), np.stack([lf.game.legal_mask() for lf in leaves])


def uniform_evaluator(planes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Uniform priors over legal moves and value 0: search guided by the rules alone."""
    m = masks.astype(np.float64)
    return m / np.maximum(m.sum(1, keepdims=True), 1.0), np.zeros(len(masks))
