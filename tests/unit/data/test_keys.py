"""The key index against a plain set of live keys, under random inserts and removals."""

import numpy as np

from shoal.data import KeyIndex


def test_oldest_newest_and_lookup_match_a_reference_set():
    rng = np.random.default_rng(0)
    index = KeyIndex(17)
    live: dict[int, int] = {}  # key -> slot
    last_key = -1
    for _ in range(2000):
        op = rng.random()
        if op < 0.5 and index.size < 17:
            n = int(rng.integers(1, 17 - index.size + 1))
            slots, keys = index.allocate(n)
            assert (np.diff(keys) > 0).all() and keys[0] > last_key  # keys only grow
            assert (keys % 17 == slots).all()
            last_key = int(keys[-1])
            live.update(zip(keys.tolist(), slots.tolist()))
        elif live:
            how = rng.integers(0, 3)
            k = int(rng.integers(1, len(live) + 1))
            if how == 0:
                gone = index.oldest(k)
            elif how == 1:
                gone = index.newest(k)
            else:
                gone = rng.choice(list(live.values()), k, replace=False)
            ordered = sorted(live)
            if how == 0:
                assert index.slot_key[gone].tolist() == ordered[:k]
            elif how == 1:
                assert index.slot_key[gone].tolist() == ordered[::-1][:k]
            for key in index.slot_key[gone].tolist():
                del live[key]
            index.free(gone)
        assert index.size == len(live)
        probe = np.arange(-2, last_key + 3)
        slots, ok = index.lookup(probe)
        assert set(probe[ok].tolist()) == set(live)
