"""Sum tree sums and sampling, importance weights and the beta schedule."""

import numpy as np
import pytest

from shoal.core.schedules import LinearSchedule
from shoal.data import ReplayTable, SumTree, importance_weights
from shoal.errors import ShoalError


def test_inner_nodes_are_sums_of_children_after_random_updates():
    rng = np.random.default_rng(0)
    tree = SumTree(13)  # not a power of two
    for _ in range(50):
        tree.set(rng.integers(0, 13, 5), rng.random(5) * 10)
    weights = tree.get(np.arange(13))
    inner = np.arange(1, tree.leaves)
    np.testing.assert_allclose(tree.nodes[inner], tree.nodes[2 * inner] + tree.nodes[2 * inner + 1])
    assert tree.total == pytest.approx(weights.sum())


def test_find_matches_a_cumulative_sum_search():
    rng = np.random.default_rng(1)
    w = rng.random(37) * (rng.random(37) > 0.3)
    tree = SumTree(37)
    tree.set(np.arange(37), w)
    mass = rng.random(1000) * w.sum()
    expected = np.searchsorted(np.cumsum(w), mass, side="right")
    np.testing.assert_array_equal(tree.find(mass), expected)


def test_sampling_frequencies_match_priorities_chi_square():
    p = np.array([1.0, 2.0, 3.0, 0.0, 4.0, 10.0, 0.5])
    tree = SumTree(len(p))
    tree.set(np.arange(len(p)), p)
    rng = np.random.default_rng(123)
    counts = np.zeros(len(p))
    for _ in range(200):
        np.add.at(counts, tree.sample(512, rng), 1)
    assert counts[3] == 0  # zero priority is never drawn
    expected = counts.sum() * p / p.sum()
    nz = p > 0
    chi2 = ((counts[nz] - expected[nz]) ** 2 / expected[nz]).sum()
    assert chi2 < 20.52  # 99.9% quantile of chi-square with 5 degrees of freedom


def test_sampling_an_empty_tree_raises():
    with pytest.raises(ShoalError, match="all zero"):
        SumTree(4).sample(2, np.random.default_rng(0))


def test_negative_or_nan_priority_is_rejected():
    tree = SumTree(4)
    with pytest.raises(ShoalError, match="non-negative"):
        tree.set(np.array([0]), np.array([-1.0]))
    with pytest.raises(ShoalError, match="non-negative"):
        tree.set(np.array([0]), np.array([np.nan]))


def test_table_probabilities_use_alpha():
    table = ReplayTable.prioritized(8, alpha=0.5)
    keys = table.insert({"x": np.arange(3.0)}, priorities=np.array([1.0, 4.0, 9.0]))
    _, got_keys, probs = table.sample(64)
    expected = {0: 1 / 6, 1: 2 / 6, 2: 3 / 6}
    np.testing.assert_allclose(probs, [expected[int(k)] for k in got_keys])
    assert set(got_keys.tolist()) <= set(keys.tolist())


def test_importance_weights_against_hand_computed_values():
    probs = np.array([0.1, 0.2, 0.4])
    # (10 * p) ** -0.5 = [1, 0.7071, 0.5], largest is 1
    np.testing.assert_allclose(importance_weights(probs, 10, 0.5), [1.0, 2 ** -0.5, 0.5], rtol=1e-6)
    # beta = 1: [1, 0.5, 0.25]
    np.testing.assert_allclose(importance_weights(probs, 10, 1.0), [1.0, 0.5, 0.25], rtol=1e-6)
    # normalised by the batch's largest weight, not by 1
    np.testing.assert_allclose(importance_weights(np.array([0.2, 0.4]), 10, 1.0), [1.0, 0.5], rtol=1e-6)


def test_linear_schedule_anneals_then_holds():
    beta = LinearSchedule(0.4, 1.0, 100)
    assert beta(0) == pytest.approx(0.4)
    assert beta(50) == pytest.approx(0.7)
    assert beta(100) == pytest.approx(1.0)
    assert beta(1000) == pytest.approx(1.0)
