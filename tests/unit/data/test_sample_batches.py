"""Several batches in one call are independent draws over the whole table (the Ape-X replay node's sample)."""

from types import SimpleNamespace

import numpy as np
import pytest

from shoal.data import ReplayTable, SumTree, importance_weights
from shoal.services.replay import ReplayNode

CHI2_9999 = {18: 49.19, 19: 50.80}  # 99.99% quantiles of chi-square (scipy.stats.chi2.ppf(0.9999, df))


def _node(table: ReplayTable) -> ReplayNode:
    ctx = SimpleNamespace(algo="test", builder=lambda: SimpleNamespace(make_tables=lambda: {"replay": table}))
    return ReplayNode(ctx)


def _items(n: int, start: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + n, dtype=np.int64)}


def test_every_batch_spreads_over_the_whole_table():
    table = ReplayTable.prioritized(1000, alpha=1.0, seed=0)
    table.insert(_items(1000), priorities=np.ones(1000))
    node = _node(table)
    for _ in range(3):
        batches = node.sample(16, 64)
        assert len(batches) == 16
        for items, keys, _, size in batches:
            assert len(keys) == 64 and size == 1000
            np.testing.assert_array_equal(items["x"], keys)  # key i holds item i
            assert keys.max() - keys.min() >= 900, (keys.min(), keys.max())  # a slice of one draw spans ~62
            assert (keys < 100).any() and (keys >= 900).any()
    assert node.sampled == 3 * 16 * 64


def test_every_batch_follows_the_priorities_chi_square():
    p = np.arange(20, dtype=np.float64)  # item 0 has priority 0; the rest 1..19
    table = ReplayTable.prioritized(20, alpha=1.0, seed=3)
    table.insert(_items(20), priorities=p)
    node = _node(table)
    counts = np.zeros((8, 20))
    for _ in range(250):
        for b, (_, keys, probs, _) in enumerate(node.sample(8, 32)):
            np.testing.assert_allclose(probs, p[keys] / p.sum())
            np.add.at(counts[b], keys, 1)
    assert counts[:, 0].sum() == 0  # zero priority is never drawn
    expected = counts.sum(1, keepdims=True) * p[1:] / p.sum()
    chi2 = ((counts[:, 1:] - expected) ** 2 / expected).sum(1)
    assert (chi2 < CHI2_9999[18]).all(), chi2  # batch by batch, not only over all batches together


def test_importance_weights_are_normalised_over_a_representative_batch():
    """Each batch's max-normalised weights look like those of a separate ``sample`` call.

    Priorities grow with the key: a batch holding one stratum of the mass holds similar
    priorities, so its weights would all be near 1 (a mean of 0.84-0.97 here instead of 0.24).
    """
    p = np.linspace(1.0, 10.0, 500)

    def table(seed):
        t = ReplayTable.prioritized(500, alpha=1.0, seed=seed)
        t.insert(_items(500), priorities=p)
        return t

    node, separate = _node(table(1)), table(2)
    means = np.zeros(8)
    for _ in range(200):
        for b, (_, _, probs, size) in enumerate(node.sample(8, 64)):
            means[b] += importance_weights(probs, size, beta=1.0).mean() / 200
    reference = np.mean([importance_weights(separate.sample(64)[2], 500, beta=1.0).mean() for _ in range(800)])
    np.testing.assert_allclose(means, reference, rtol=0.05)


def test_sum_tree_rows_are_each_stratified_over_the_whole_mass():
    tree = SumTree(64)
    tree.set(np.arange(64), np.ones(64))
    rows = tree.sample_batches(5, 8, np.random.default_rng(0))
    assert rows.shape == (5, 8)
    for row in rows:  # equal weights: each row takes exactly one leaf from each eighth of the leaves
        np.testing.assert_array_equal(row // 8, np.arange(8))
    p = np.array([0.0, *range(1, 20)])
    tree = SumTree(20)
    tree.set(np.arange(20), p)
    rng = np.random.default_rng(7)
    counts = np.zeros((4, 20))
    for _ in range(300):
        for b, row in enumerate(tree.sample_batches(4, 16, rng)):
            np.add.at(counts[b], row, 1)
    expected = counts.sum(1, keepdims=True) * p[1:] / p.sum()
    assert counts[:, 0].sum() == 0
    assert (((counts[:, 1:] - expected) ** 2 / expected).sum(1) < CHI2_9999[18]).all()


def test_single_sample_draws_as_before():
    """``sample(n)`` is ``sample_batches(1, n)``: one stratified draw, the same numbers for the same seed."""
    tree = SumTree(37)
    tree.set(np.arange(37), np.random.default_rng(2).random(37))
    a = tree.sample(50, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    mass = (np.arange(50) + rng.random(50)) * (tree.total / 50)
    np.testing.assert_array_equal(a, tree.find(mass))


def test_uniform_batches_are_independent_and_of_live_items():
    table = ReplayTable.uniform(100, seed=0)
    table.insert(_items(150 - 100, start=0))
    table.insert(_items(100, start=50))  # evicts keys 0..49
    batches = table.sample_batches(10, 32)
    assert [len(k) for _, k, _ in batches] == [32] * 10
    keys = np.concatenate([k for _, k, _ in batches])
    assert keys.min() >= 50 and len(np.unique(keys)) > 32
    assert all(np.allclose(p, 1 / 100) for _, _, p in batches)


def test_a_queue_hands_out_successive_batches_and_stops_when_empty():
    table = ReplayTable.queue(100)
    table.insert(_items(80))
    batches = table.sample_batches(4, 32)  # 80 items: two whole batches, then the queue holds 16
    assert [list(k) for _, k, _ in batches] == [list(range(32)), list(range(32, 64))]
    assert len(table) == 16


@pytest.mark.parametrize("n", [0, -1])
def test_bad_batch_counts_are_refused(n):
    table = ReplayTable.uniform(10)
    table.insert(_items(10))
    with pytest.raises(Exception, match="at least 1"):
        table.sample_batches(n, 4)
    assert _node(table).sample(n, 4) == []
