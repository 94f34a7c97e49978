"""Statistics over seeds: IQM and intervals (against hand-computed values and rliable), bootstrap bands."""

from __future__ import annotations

import numpy as np
import pytest

from shoal.errors import ShoalError
from shoal.run.stats import bootstrap_mean_band, common_grid, format_report, on_grid, summarize


def test_iqm_matches_a_hand_computed_value_and_rliable():
    from rliable import metrics

    scores = [10.0, 1.0, 7.0, 3.0, 100.0, 5.0, 2.0, 9.0]
    # 8 runs: drop the 2 lowest (1, 2) and the 2 highest (10, 100); the mean of 3, 5, 7, 9 is 6.
    table = summarize({"a": scores}, reps=200)
    assert table["a"]["iqm"] == pytest.approx(6.0)
    assert table["a"]["iqm"] == pytest.approx(metrics.aggregate_iqm(np.array(scores).reshape(-1, 1)))
    assert table["a"]["mean"] == pytest.approx(sum(scores) / 8)
    assert table["a"]["median"] == pytest.approx(6.0)  # (5 + 7) / 2
    assert table["a"]["seeds"] == 8


def test_iqm_of_five_seeds_trims_one_on_each_side():
    table = summarize({"a": [4.0, 1.0, 3.0, 2.0, 50.0]}, reps=200)
    assert table["a"]["iqm"] == pytest.approx(3.0)  # mean of 2, 3, 4
    assert table["a"]["median"] == pytest.approx(3.0)


def test_intervals_are_rliables_stratified_bootstrap_with_the_same_seed():
    from rliable import library, metrics

    scores = np.array([120.0, 300.0, 80.0, 250.0, 410.0, 95.0]).reshape(-1, 1)
    ours = summarize({"x": scores.ravel().tolist()}, reps=500, ci=0.9, seed=3)["x"]
    # rliable resamples with numpy's global generator (its random_state does not reach the draws):
    # seeded the same way, it draws the same resamples, so the IQM interval is rliable's exactly.
    np.random.seed(3)
    _, ci = library.get_interval_estimates({"x": scores}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=500,
                                           confidence_interval_size=0.9, random_state=np.random.RandomState(3))
    assert ours["iqm_ci"] == pytest.approx([ci["x"][0][0], ci["x"][1][0]])
    for stat in ("mean", "median", "iqm"):
        lo, hi = ours[f"{stat}_ci"]
        assert scores.min() <= lo <= ours[stat] <= hi <= scores.max()


def test_summary_is_reproducible_for_a_seed_and_leaves_the_global_generator_alone():
    np.random.seed(123)
    np.random.rand(7)
    before = np.random.get_state()
    a = summarize({"x": [1.0, 5.0, 2.0, 8.0, 3.0]}, reps=300, seed=1)
    after = np.random.get_state()
    assert (after[1] == before[1]).all() and after[2] == before[2]  # the caller's stream goes on where it was
    np.random.rand()  # whatever the caller's generator does in between does not matter
    b = summarize({"x": [1.0, 5.0, 2.0, 8.0, 3.0]}, reps=300, seed=1)
    c = summarize({"x": [1.0, 5.0, 2.0, 8.0, 3.0]}, reps=300, seed=2)
    assert a == b and a != c


def test_bootstrap_band_matches_a_slow_loop():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 7)) * 10
    mean, low, high = bootstrap_mean_band(values, reps=400, ci=0.95, seed=11)
    # The slow reference: the same generator, one resample of seeds at a time.
    ref_rng = np.random.default_rng(11)
    idx = ref_rng.integers(0, 5, size=(400, 5))
    boot = np.empty((400, 7))
    for r in range(400):
        for p in range(7):
            boot[r, p] = sum(values[i, p] for i in idx[r]) / 5
    for p in range(7):
        col = sorted(boot[:, p])
        assert low[p] == pytest.approx(np.percentile(col, 2.5))
        assert high[p] == pytest.approx(np.percentile(col, 97.5))
        assert mean[p] == pytest.approx(values[:, p].mean())
        assert low[p] <= mean[p] <= high[p]


def test_band_of_identical_seeds_is_the_curve():
    curve = np.array([[1.0, 2.0, 3.0]] * 4)
    mean, low, high = bootstrap_mean_band(curve, reps=50)
    assert np.allclose(mean, [1, 2, 3]) and np.allclose(low, mean) and np.allclose(high, mean)


def test_common_grid_covers_the_steps_every_seed_has_and_interpolates():
    grid = common_grid([np.array([10.0, 50.0, 100.0]), np.array([20.0, 90.0])], points=8)
    assert grid[0] == 20.0 and grid[-1] == 90.0 and len(grid) == 8
    y = on_grid(np.array([0.0, 10.0, np.nan, 20.0]), np.array([0.0, 10.0, 5.0, 30.0]), np.array([5.0, 15.0]))
    assert y.tolist() == [5.0, 20.0]  # the blank x row is dropped, then linear between 10 and 20
    with pytest.raises(ShoalError, match="do not overlap"):
        common_grid([np.array([0.0, 5.0]), np.array([10.0, 20.0])])


def test_report_text_names_every_statistic_with_its_interval():
    table = summarize({"runs/e": [1.0, 2.0, 3.0]}, reps=100)
    table["runs/e"].update(algo="ppo", env="CartPole-v1")
    text = format_report(table)
    assert "IQM [95% CI]" in text and "runs/e" in text and "ppo" in text
    row = text.splitlines()[2]
    assert f"{table['runs/e']['iqm']:.2f} [" in row and row.count("[") == 3


def test_a_rows_interval_does_not_depend_on_the_other_rows_of_the_table():
    a = [120.0, 300.0, 80.0, 250.0, 410.0, 95.0]
    alone = summarize({"a": a}, reps=300, seed=4)["a"]
    with_others = summarize({"b": [1.0, 9.0, 3.0, 7.0], "a": a, "c": [5.0, 6.0, 2.0]}, reps=300, seed=4)["a"]
    assert alone == with_others


def test_bootstrap_band_width_matches_normal_theory_for_many_seeds():
    # For n independent seeds the mean's 95% interval is about mean +- 1.96 * sd / sqrt(n)
    # (sd with ddof=0, what the bootstrap resamples): an independent check of the band's width.
    values = np.random.default_rng(5).normal(50.0, 10.0, size=(400, 1))
    mean, low, high = bootstrap_mean_band(values, reps=4000, ci=0.95, seed=2)
    expected = 2 * 1.959964 * values.std() / np.sqrt(400)
    assert high[0] - low[0] == pytest.approx(expected, rel=0.08)
    assert (low[0] + high[0]) / 2 == pytest.approx(mean[0], abs=0.1 * expected)


def test_bootstrap_band_covers_the_true_mean_about_as_often_as_it_says():
    # 400 independent experiments of 20 seeds each, one per column; the true mean is 0.
    values = np.random.default_rng(6).normal(0.0, 1.0, size=(20, 400))
    _, low, high = bootstrap_mean_band(values, reps=1000, ci=0.9, seed=3)
    coverage = float(((low <= 0.0) & (0.0 <= high)).mean())
    assert 0.84 <= coverage <= 0.95  # nominal 0.9; the percentile bootstrap runs a little under it at n=20


def test_report_note_names_failed_seeds():
    table = summarize({"runs/e": [1.0, 2.0, 3.0]}, reps=100)
    table["runs/e"].update(algo="ppo", env="CartPole-v1", listed=5, failed={"3": "RuntimeError: x", "4": "interrupted"})
    assert format_report(table).splitlines()[-1].endswith("runs/e: 2 of 5 seeds failed or missing (3 4), not counted")


def test_a_missing_rliable_names_the_extra(monkeypatch):
    import sys

    from shoal.errors import ConfigError

    monkeypatch.setitem(sys.modules, "rliable", None)
    with pytest.raises(ConfigError, match=r"pip install 'shoal\[stats\]'"):
        summarize({"a": [1.0, 2.0]}, reps=100)
