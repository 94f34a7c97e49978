"""The frame-deduplicating storage returns exactly what a plain storage would."""

import numpy as np
import pytest

from shoal.core.types import StepResult
from shoal.data import ArrayStorage, FrameStackStorage, NStepTransitionAdder, ReplayTable, TransitionAdder, Uniform
from shoal.errors import ShoalError

STACK = 4


class FrameStackEnvs:
    """B copies of an env with stacked frames, as Gymnasium's FrameStackObservation stacks them:
    at reset the first frame is repeated; episodes end (terminated or truncated) after random lengths.
    Some frames repeat a few fixed contents, as static screens do."""

    def __init__(self, b, frame_shape, seed, max_len=12):
        self.rng = np.random.default_rng(seed)
        self.frame_shape, self.max_len = frame_shape, max_len
        self.palette = self.rng.integers(0, 256, (3, *frame_shape), dtype=np.uint8)
        self.stacks = [self._reset() for _ in range(b)]
        self.left = self.rng.integers(1, max_len + 1, b)

    def _frame(self):
        if self.rng.random() < 0.3:
            return self.palette[self.rng.integers(0, 3)].copy()
        return self.rng.integers(0, 256, self.frame_shape, dtype=np.uint8)

    def _reset(self):
        return np.stack([self._frame()] * STACK)

    def obs(self):
        return np.stack(self.stacks)

    def step(self):
        b = len(self.stacks)
        final = np.zeros_like(self.obs())
        term, trunc = np.zeros(b, bool), np.zeros(b, bool)
        for i in range(b):
            self.stacks[i] = np.concatenate([self.stacks[i][1:], self._frame()[None]])
            self.left[i] -= 1
            if self.left[i] == 0:
                final[i] = self.stacks[i]
                term[i], trunc[i] = (True, False) if self.rng.random() < 0.5 else (False, True)
                self.stacks[i] = self._reset()
                self.left[i] = self.rng.integers(1, self.max_len + 1)
        reward = self.rng.random(b).astype(np.float32)
        return StepResult(self.obs(), reward, term, trunc, final)


def item_batches(adder, envs, steps):
    adder.add_first(envs.obs())
    for _ in range(steps):
        adder.add(envs.rng.integers(0, 6, len(envs.stacks)), envs.step())
        items = adder.drain()
        if items is not None:
            yield items


@pytest.mark.parametrize("frame_shape", [(6, 7), (8, 8)])
@pytest.mark.parametrize("n", [1, 3])
def test_same_samples_as_a_plain_storage_across_wrap_around(frame_shape, n):
    envs = FrameStackEnvs(3, frame_shape, seed=n)
    plain = ReplayTable(64, Uniform(seed=7), storage=ArrayStorage(64))
    frames = ReplayTable(64, Uniform(seed=7), storage=FrameStackStorage(64, frame_capacity=160))
    inserted = 0
    for items in item_batches(NStepTransitionAdder(n, 0.9), envs, 150):
        k1, k2 = plain.insert(items), frames.insert(items)
        np.testing.assert_array_equal(k1, k2)
        inserted += len(k1)
        a, b = plain.sample(8), frames.sample(8)
        np.testing.assert_array_equal(a[1], b[1])
        for key in a[0]:
            np.testing.assert_array_equal(a[0][key], b[0][key], err_msg=key)
    assert inserted > 4 * 64  # wrapped around several times
    used = frames.storage.frame_capacity - frames.storage.num_free
    assert used <= 1.6 * len(frames)  # about one new frame per item, not 2 * STACK
    plain_obs = plain.storage.arrays["obs"].nbytes + plain.storage.arrays["next_obs"].nbytes
    assert frames.storage.frames.nbytes < plain_obs / 2


def test_frames_run_out_before_slots_and_only_whole_items_are_sampled():
    envs = FrameStackEnvs(4, (5, 5), seed=3, max_len=3)  # short episodes: more distinct frames per item
    table = ReplayTable(50, Uniform(seed=1), storage=FrameStackStorage(50, frame_capacity=56))
    reference = {}
    smallest = 50
    for items in item_batches(TransitionAdder(0.9), envs, 120):
        keys = table.insert(items)
        for j, key in enumerate(keys.tolist()):
            reference[key] = {k: v[j] for k, v in items.items()}
        smallest = min(smallest, len(table))
        got, sampled, _ = table.sample(16)
        for j, key in enumerate(sampled.tolist()):
            for k in got:
                np.testing.assert_array_equal(got[k][j], reference[key][k], err_msg=k)
    assert table.num_evicted > sum(1 for _ in reference) - 50  # evicted for frames, not just for slots
    live = table.index.live_slots()
    stored = table.storage.read(live)
    for j, key in enumerate(table.index.slot_key[live].tolist()):
        np.testing.assert_array_equal(stored["obs"][j], reference[key]["obs"])
        np.testing.assert_array_equal(stored["next_obs"][j], reference[key]["next_obs"])
    assert (table.storage.refcount >= 0).all()


def test_frames_are_freed_when_their_items_are_gone():
    envs = FrameStackEnvs(2, (4, 4), seed=0)
    table = ReplayTable.queue(40, storage=FrameStackStorage(40))
    for items in item_batches(TransitionAdder(0.9), envs, 10):
        table.insert(items)
    while len(table):
        table.sample(1)
    assert table.storage.num_free == table.storage.frame_capacity
    assert (table.storage.refcount == 0).all()


def test_frames_shared_with_an_evicted_item_survive_its_eviction():
    x, y, z, w = (np.full((4, 4), v, np.uint8) for v in (1, 2, 3, 4))
    table = ReplayTable(1, storage=FrameStackStorage(1, frame_capacity=8))
    table.insert({"obs": np.stack([x, x, x, x])[None], "next_obs": np.stack([x, x, x, y])[None]})
    # The only slot is taken, so this insert evicts the first item while reusing its frame x,
    # and needs two new frames (z, w): x must not be handed out for them.
    second = {"obs": np.stack([x, x, x, x])[None], "next_obs": np.stack([x, x, z, w])[None]}
    table.insert(second)
    got = table.sample(1)[0]
    np.testing.assert_array_equal(got["obs"], second["obs"])
    np.testing.assert_array_equal(got["next_obs"], second["next_obs"])


def test_a_batch_larger_than_the_frame_pool_is_refused_before_anything_is_evicted():
    table = ReplayTable(8, storage=FrameStackStorage(8, frame_capacity=6))
    rng = np.random.default_rng(0)
    ok = rng.integers(0, 255, (1, 2, 3, 3), dtype=np.uint8)
    table.insert({"obs": ok, "next_obs": ok})
    too_many = rng.integers(0, 255, (4, 2, 3, 3), dtype=np.uint8)  # 8 distinct frames, the pool holds 6
    with pytest.raises(ShoalError, match="frame_capacity"):
        table.insert({"obs": too_many, "next_obs": too_many[:, ::-1]})
    assert len(table) == 1
    np.testing.assert_array_equal(table.sample(1)[0]["obs"], ok)
