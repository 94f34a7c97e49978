"""Table insert, eviction, stale keys, key growth and checkpoint round trips."""

import numpy as np
import pytest

from shoal.data import FrameStackStorage, MaxHeap, Prioritized, ReplayTable, Uniform, load_table, save_table
from shoal.errors import ShoalError


def batch(start, n):
    v = np.arange(start, start + n)
    return {"obs": np.stack([v, -v], 1).astype(np.float32), "action": v.astype(np.int64)}


def test_eviction_is_fifo_and_stale_keys_are_ignored():
    table = ReplayTable.prioritized(4, alpha=1.0)
    first = table.insert(batch(0, 3))
    second = table.insert(batch(3, 3))
    np.testing.assert_array_equal(first, [0, 1, 2])
    np.testing.assert_array_equal(second, [3, 4, 5])
    assert len(table) == 4 and table.num_evicted == 2
    live = table.storage.read(table.index.live_slots())["action"]
    np.testing.assert_array_equal(live, [2, 3, 4, 5])
    table.update_priorities(np.array([0, 1, 5]), np.array([100.0, 100.0, 7.0]))  # 0, 1 are gone
    slots, ok = table.index.lookup(np.array([0, 1, 5]))
    assert ok.tolist() == [False, False, True]
    assert table.selector.tree.get(slots[2:]) == pytest.approx([7.0])
    assert table.selector.tree.total == pytest.approx(3 * 1.0 + 7.0)  # evicted priorities are gone


def test_sampled_keys_match_sampled_items():
    table = ReplayTable.uniform(5, seed=0)
    for i in range(4):
        table.insert(batch(3 * i, 3))
    got, keys, _ = table.sample(50)
    np.testing.assert_array_equal(got["action"], keys)  # item i was inserted with key i


def test_insert_errors_name_the_problem():
    table = ReplayTable.uniform(4)
    with pytest.raises(ShoalError, match="capacity"):
        table.insert(batch(0, 5))
    table.insert(batch(0, 2))
    with pytest.raises(ShoalError, match="fields"):
        table.insert({"obs": np.zeros((2, 2), np.float32)})
    with pytest.raises(ShoalError, match="shape"):
        table.insert({"obs": np.zeros((2, 3), np.float32), "action": np.zeros(2, np.int64)})
    with pytest.raises(ShoalError, match="leading item axis"):
        table.insert({"obs": np.zeros((2, 2), np.float32), "action": np.zeros(3, np.int64)})
    with pytest.raises(ShoalError, match="priorities"):
        table.insert(batch(0, 2), priorities=np.ones(3))


def _fill(table, seed):
    rng = np.random.default_rng(seed)
    for i in range(12):
        n = int(rng.integers(1, 7))
        table.insert(batch(10 * i, n), priorities=rng.random(n) + 0.1)
        if len(table) >= 4:
            _, keys, _ = table.sample(4)
            table.update_priorities(keys, rng.random(4) + 0.1)


@pytest.mark.parametrize("make", [
    lambda: ReplayTable(16, Prioritized(alpha=0.7, seed=5)),
    lambda: ReplayTable(16, Uniform(seed=5), max_times_sampled=3),
    lambda: ReplayTable(16, MaxHeap()),
])
def test_checkpoint_round_trip_gives_identical_samples(tmp_path, make):
    table = make()
    _fill(table, 0)
    save_table(table, tmp_path / "replay")
    restored = load_table(make(), tmp_path / "replay")
    assert len(restored) == len(table)
    for step in range(5):
        a, b = table.sample(6), restored.sample(6)
        for x, y in zip(a[1:], b[1:]):
            np.testing.assert_array_equal(x, y)
        for k in a[0]:
            np.testing.assert_array_equal(a[0][k], b[0][k])
        for t in (table, restored):
            t.insert(batch(1000 + step, 2), priorities=np.array([0.3, 2.0]))
            t.update_priorities(a[1][:3], np.array([0.5, 1.5, 2.5]))
    assert table.rate_limiter.state() == restored.rate_limiter.state()


def test_checkpoint_round_trip_with_frame_storage(tmp_path):
    def make():
        return ReplayTable(8, Uniform(seed=2), storage=FrameStackStorage(8, frame_capacity=40))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (30, 5, 5), dtype=np.uint8)
    table = make()
    for t in range(12):
        obs = np.stack([frames[t:t + 4], frames[t + 1:t + 5]])  # two streams... consecutive stacks
        table.insert({"obs": obs, "next_obs": obs + 1, "reward": np.array([t, t], np.float32)})
    save_table(table, tmp_path / "r")
    restored = load_table(make(), tmp_path / "r")
    for _ in range(3):
        a, b = table.sample(5), restored.sample(5)
        np.testing.assert_array_equal(a[1], b[1])
        for k in a[0]:
            np.testing.assert_array_equal(a[0][k], b[0][k])


def test_loading_into_a_different_table_is_refused(tmp_path):
    table = ReplayTable.uniform(8)
    table.insert(batch(0, 3))
    save_table(table, tmp_path / "r")
    with pytest.raises(ShoalError, match="capacity"):
        load_table(ReplayTable.uniform(16), tmp_path / "r")
    with pytest.raises(ShoalError, match="selector_type"):
        load_table(ReplayTable.prioritized(8), tmp_path / "r")


def test_bad_priorities_leave_the_table_unchanged():
    table = ReplayTable.prioritized(8)
    table.insert(batch(0, 2))
    with pytest.raises(ShoalError, match="non-negative"):
        table.insert(batch(2, 2), priorities=np.array([1.0, -1.0]))
    with pytest.raises(ShoalError, match="non-negative"):
        table.update_priorities(np.array([0]), np.array([np.nan]))
    assert len(table) == 2 and table.selector.tree.total == pytest.approx(2.0)
