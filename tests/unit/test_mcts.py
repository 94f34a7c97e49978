"""PUCT search, virtual loss, root noise, tree reuse, the UCT/MCTS-Solver baseline and the minimax player."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shoal.agents.alphazero.baseline import MCTSSolver
from shoal.agents.alphazero.mcts import MCTS, Node, puct_scores, select_child, uniform_evaluator, visit_policy
from shoal.agents.alphazero.minimax import MinimaxPlayer
from shoal.envs.games import make_game


def _hand_built() -> Node:
    node = Node()
    node.expand(np.array([0, 1, 2]), np.array([0.5, 0.3, 0.2]))
    node.N[:] = [10, 2, 0]
    node.W[:] = [6, 1.5, 0]
    return node


def test_puct_scores_on_a_hand_built_tree() -> None:
    node, c = _hand_built(), 1.5
    sqrt_n = math.sqrt(12)
    expected = [0.6 + c * 0.5 * sqrt_n / 11, 0.75 + c * 0.3 * sqrt_n / 3, 0.0 + c * 0.2 * sqrt_n / 1]
    assert np.allclose(puct_scores(node, c), expected)
    assert select_child(node, c) == int(np.argmax(expected)) == 1
    assert select_child(node, 10.0) == 2   # a large c_puct explores the unvisited child
    assert select_child(node, 0.0) == 1    # c_puct 0 is greedy in Q


def test_visit_policy_temperature() -> None:
    n = np.array([1.0, 3.0, 0.0, 4.0])
    assert np.array_equal(visit_policy(n, 0.0), [0, 0, 0, 1])
    assert np.allclose(visit_policy(n, 1.0), n / 8)
    sq = n ** 2
    assert np.allclose(visit_policy(n, 0.5), sq / sq.sum())


@pytest.mark.parametrize("batch", [1, 8])
def test_visits_concentrate_on_the_winning_move(batch: int) -> None:
    # X to move: X X . / O O . / . . .  -> 2 wins at once (5 would only block)
    g = make_game("tictactoe").play_all([0, 3, 1, 4])
    tree = MCTS(g, c_puct=1.5)
    visits = tree.search(uniform_evaluator, 400, batch=batch)
    assert visits.sum() == pytest.approx(399)  # the first simulation evaluates the root itself
    assert int(np.argmax(visits)) == 2 and visits[2] / visits.sum() > 0.8
    assert (tree.root.N >= 0).all() and np.array_equal(tree.root.N, np.round(tree.root.N))  # every virtual loss was undone


def test_virtual_loss_spreads_a_batch_over_distinct_leaves() -> None:
    tree = MCTS(make_game("connect4"), c_puct=1.5, virtual_loss=3.0)
    tree.search(uniform_evaluator, 1)  # expands the root
    leaves = tree.select_leaves(7)
    assert len(leaves) == 7 and len({id(lf.node) for lf in leaves}) == 7
    assert sorted(lf.game.history[0] for lf in leaves) == list(range(7))
    no_vl = MCTS(make_game("connect4"), c_puct=1.5, virtual_loss=0.0)
    no_vl.search(uniform_evaluator, 1)
    assert len({id(lf.node) for lf in no_vl.select_leaves(7)}) == 1  # without it every descent takes the same path
    tree.deliver(leaves, np.full((7, 7), 1 / 7), np.zeros(7))
    assert np.array_equal(tree.root.N, np.ones(7)) and np.allclose(tree.root.W, 0)


def test_one_batched_network_call_per_batch() -> None:
    calls: list[int] = []

    def counting(planes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(planes))
        return uniform_evaluator(planes, masks)

    tree = MCTS(make_game("connect4"), virtual_loss=3.0)
    tree.search(counting, 65, batch=16)
    assert calls[0] == 1 and len(calls) == 5 and sum(calls) == 65 and max(calls) == 16
    assert tree.leaf_evaluations / tree.network_calls == pytest.approx(65 / 5)


def test_root_noise_and_tree_reuse() -> None:
    tree = MCTS(make_game("connect4"), noise_frac=0.25, dirichlet_alpha=1.0, rng=np.random.default_rng(1))
    tree.search(uniform_evaluator, 200, batch=4)
    root = tree.root
    assert np.allclose(root.prior, 1 / 7) and not np.allclose(root.P, root.prior)
    assert np.allclose(root.P.sum(), 1.0) and (root.P >= 0.75 / 7 - 1e-12).all()
    a = int(np.argmax(tree.visits()))
    child = root.children[int(np.flatnonzero(root.actions == a)[0])]
    kept = child.N.sum()
    assert kept > 0
    tree.advance(a)
    assert tree.root is child and tree.game.history == [a] and tree.root.N.sum() == kept
    assert not np.allclose(tree.root.P, tree.root.prior)  # the new root is noised too
    tree.search(uniform_evaluator, 50)
    assert tree.root.N.sum() == pytest.approx(kept + 50)


def test_deterministic_without_noise() -> None:
    def run() -> np.ndarray:
        t = MCTS(make_game("tictactoe"))
        return t.search(uniform_evaluator, 100, batch=4)

    assert np.array_equal(run(), run())


def test_solver_takes_a_win_and_blocks_a_loss() -> None:
    g = make_game("connect4").play_all([0, 6, 1, 6, 2])  # X threatens 3; O to move must block
    solver = MCTSSolver(simulations=300, seed=0)
    assert solver.select_action(g) == 3
    g.play_all([5])
    assert solver.select_action(g) == 3  # X wins at once
    root = solver.search(g)
    assert root.proven == 1.0


def test_solver_proves_a_forced_loss() -> None:
    # X holds 2, 3, 4 on the bottom row with both ends open; O to move cannot block both 1 and 5
    g = make_game("connect4").play_all([2, 2, 3, 3, 4])
    root = MCTSSolver(simulations=2000, seed=0).search(g)
    assert root.proven == -1.0 and (root.child_proven == -1.0).all()


def test_minimax_values() -> None:
    mm = MinimaxPlayer(seed=0)
    assert mm.value(make_game("tictactoe")) == 0.0
    assert mm.value(make_game("tictactoe").play_all([0, 1])) == 1.0  # X wins after O's edge reply to a corner
    g = make_game("tictactoe").play_all([0, 3, 1, 4])
    assert mm.select_action(g) == 2
    assert mm.move_values(make_game("tictactoe").play_all([4]))[1] == -1.0  # O's edge reply to the centre loses
    # self-play of two perfect players always draws
    for s in range(5):
        game, p = make_game("tictactoe"), MinimaxPlayer(seed=s)
        while not game.is_terminal():
            game.play(p.select_action(game))
        assert game.winner == 0


def test_solver_beats_random_at_tictactoe() -> None:
    rng = np.random.default_rng(0)
    solver = MCTSSolver(simulations=200, seed=0)
    losses = 0
    for k in range(10):
        g = make_game("tictactoe")
        while not g.is_terminal():
            if (len(g.history) % 2 == 0) == (k % 2 == 0):
                g.play(solver.select_action(g))
            else:
                g.play(int(rng.choice(g.legal_actions())))
        solver_side = 1 if k % 2 == 0 else -1
        losses += g.winner == -solver_side
    assert losses == 0


def test_losing_lines_against_perfect_play() -> None:
    from shoal.agents.alphazero.minimax import losing_lines

    class Lowest:
        def select_action(self, game):
            return int(game.legal_actions()[0])

    new = lambda: make_game("tictactoe")  # noqa: E731
    mm = MinimaxPlayer(seed=0)
    assert losing_lines(mm, new, mm) == {"first": [], "second": []}
    lost = losing_lines(Lowest(), new, mm)
    assert lost["first"] and lost["second"]
    for h in lost["first"] + lost["second"]:
        g = make_game("tictactoe").play_all(h)
        assert g.is_terminal() and g.winner != 0
