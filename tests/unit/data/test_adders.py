"""Transition, n-step, sequence and episode adders against explicit tables of expected items.

Two env copies, seven steps. Observations are numbers so items are easy to read:
copy 0 terminates after its 4th step (final obs 99) and starts again at 100;
copy 1 is truncated after its 2nd step (final obs 98), starts again at 110 and
terminates after 5 more steps (final obs 97). Rewards double every step.
"""

import numpy as np
import pytest

from shoal.core.types import StepResult
from shoal.data import EpisodeAdder, NStepTransitionAdder, ReplayTable, SequenceAdder, TransitionAdder, split_priorities
from shoal.errors import ShoalError

#          obs,  reward, terminated, truncated, final, next_obs   (per step t = 0..6)
COPY0 = [(0, 1, 0, 0, -1, 1), (1, 2, 0, 0, -1, 2), (2, 4, 0, 0, -1, 3), (3, 8, 1, 0, 99, 100),
         (100, 16, 0, 0, -1, 101), (101, 32, 0, 0, -1, 102), (102, 64, 0, 0, -1, 103)]
COPY1 = [(10, 1, 0, 0, -1, 11), (11, 2, 0, 1, 98, 110), (110, 4, 0, 0, -1, 111), (111, 8, 0, 0, -1, 112),
         (112, 16, 0, 0, -1, 113), (113, 32, 0, 0, -1, 114), (114, 64, 1, 0, 97, 120)]


def run(adder, steps=7, with_extras=False):
    """Feed the script; returns the items produced after each step (None where none)."""
    adder.add_first(np.array([[COPY0[0][0]], [COPY1[0][0]]], np.float32))
    out = []
    for t in range(steps):
        rows = np.array([COPY0[t], COPY1[t]], np.float32)
        step = StepResult(next_obs=rows[:, 5:6], reward=rows[:, 1], terminated=rows[:, 2] > 0,
                          truncated=rows[:, 3] > 0, final_obs=rows[:, 4:5])
        action = rows[:, 0].astype(np.int64)
        extras = {"logp": rows[:, 0] / 10, "priority": rows[:, 0] + 1} if with_extras else None
        adder.add(action, step, extras)
        out.append(adder.drain())
    return out


def test_one_step_transitions_bootstrap_from_final_obs_on_truncation():
    items = run(TransitionAdder(gamma=0.5))
    t1 = items[1]  # copy 0 goes on, copy 1 is truncated
    np.testing.assert_array_equal(t1["obs"][:, 0], [1, 11])
    np.testing.assert_array_equal(t1["next_obs"][:, 0], [2, 98])
    np.testing.assert_array_equal(t1["discount"], [0.5, 0.5])
    t3 = items[3]  # copy 0 terminates
    np.testing.assert_array_equal(t3["next_obs"][:, 0], [99, 112])
    np.testing.assert_array_equal(t3["discount"], [0.0, 0.5])
    np.testing.assert_array_equal(t3["reward"], [8, 8])
    np.testing.assert_array_equal(items[4]["obs"][:, 0], [100, 112])  # the reset obs starts the next item
    assert all(len(i["obs"]) == 2 for i in items)


# (after step, start step, copy): obs, action, n-step reward, discount, next_obs   (n = 3, gamma = 0.5)
NSTEP = [
    (1, 0, 1, 10, 1 + 0.5 * 2, 0.25, 98),    # truncated: shorter windows still bootstrap
    (1, 1, 1, 11, 2, 0.5, 98),
    (2, 0, 0, 0, 1 + 0.5 * 2 + 0.25 * 4, 0.125, 3),
    (3, 1, 0, 1, 2 + 0.5 * 4 + 0.25 * 8, 0.0, 99),  # terminated: every start in the window is flushed
    (3, 2, 0, 2, 4 + 0.5 * 8, 0.0, 99),
    (3, 3, 0, 3, 8, 0.0, 99),
    (4, 2, 1, 110, 4 + 0.5 * 8 + 0.25 * 16, 0.125, 113),
    (5, 3, 1, 111, 8 + 0.5 * 16 + 0.25 * 32, 0.125, 114),
    (6, 4, 0, 100, 16 + 0.5 * 32 + 0.25 * 64, 0.125, 103),
    (6, 4, 1, 112, 16 + 0.5 * 32 + 0.25 * 64, 0.0, 97),
    (6, 5, 1, 113, 32 + 0.5 * 64, 0.0, 97),
    (6, 6, 1, 114, 64, 0.0, 97),
]


def test_n_step_items_match_the_table():
    out = run(NStepTransitionAdder(n=3, gamma=0.5), with_extras=True)
    for t in range(7):
        rows = [r for r in NSTEP if r[0] == t]
        got = out[t]
        if not rows:
            assert got is None
            continue
        np.testing.assert_array_equal(got["obs"][:, 0], [r[3] for r in rows])
        np.testing.assert_array_equal(got["action"], [r[3] for r in rows])
        np.testing.assert_allclose(got["reward"], [r[4] for r in rows])
        np.testing.assert_allclose(got["discount"], [r[5] for r in rows])
        np.testing.assert_array_equal(got["next_obs"][:, 0], [r[6] for r in rows])
        np.testing.assert_allclose(got["logp"], [r[3] / 10 for r in rows], rtol=1e-6)  # extras of the first step


def test_n_step_adder_writes_to_a_table_with_actor_priorities():
    table = ReplayTable.prioritized(64, alpha=1.0)
    adder = NStepTransitionAdder(n=3, gamma=0.5, table=table)
    assert run(adder, with_extras=True) == [None] * 7
    assert len(table) == len(NSTEP)
    stored = table.storage.read(table.index.live_slots())
    assert "priority" not in stored
    weights = table.selector.tree.get(table.index.live_slots())
    np.testing.assert_allclose(weights, stored["obs"][:, 0] + 1)  # priority extra = obs + 1
    items, p = split_priorities({"priority": np.array([0.5, 2.0]), "x": np.zeros(2)})
    assert set(items) == {"x"} and p.tolist() == [0.5, 2.0]
    items, p = split_priorities({"x": np.zeros(2)})
    assert set(items) == {"x"} and p is None


# (after step, copy, start): obs, reward, discount, mask      (L = 3, period = 2, gamma = 0.5)
SEQ = [
    (1, 1, 0, [10, 11, 98], [1, 2, 0], [0.5, 0.5, 0], [1, 1, 1]),
    (2, 0, 0, [0, 1, 2], [1, 2, 4], [0.5, 0.5, 0.5], [1, 1, 1]),
    (3, 0, 2, [2, 3, 99], [4, 8, 0], [0.5, 0, 0], [1, 1, 1]),
    (4, 1, 0, [110, 111, 112], [4, 8, 16], [0.5, 0.5, 0.5], [1, 1, 1]),
    (6, 0, 0, [100, 101, 102], [16, 32, 64], [0.5, 0.5, 0.5], [1, 1, 1]),
    (6, 1, 2, [112, 113, 114], [16, 32, 64], [0.5, 0.5, 0], [1, 1, 1]),
    (6, 1, 4, [114, 97, 0], [64, 0, 0], [0, 0, 0], [1, 1, 0]),  # padded past the final obs
]


def test_sequence_items_match_the_table():
    out = run(SequenceAdder(length=3, period=2, gamma=0.5), with_extras=True)
    for t in range(7):
        rows = [r for r in SEQ if r[0] == t]
        got = out[t]
        if not rows:
            assert got is None
            continue
        np.testing.assert_array_equal(got["obs"][..., 0], [r[3] for r in rows])
        np.testing.assert_array_equal(got["reward"], [r[4] for r in rows])
        np.testing.assert_allclose(got["discount"], [r[5] for r in rows])
        np.testing.assert_array_equal(got["mask"], np.array([r[6] for r in rows], bool))
        # actions and extras follow the obs, and are zero on the final-obs and padding timesteps
        act = np.array([[o if m and o not in (99, 98, 97) else 0 for o, m in zip(r[3], r[6])] for r in rows])
        np.testing.assert_array_equal(got["action"], act)
        np.testing.assert_allclose(got["logp"], act / 10, rtol=1e-6)
        assert got["priority"].shape == (len(rows), 3)  # per-step extras stay per step


def test_period_l_minus_one_covers_every_transition_exactly_once():
    out = [o for o in run(SequenceAdder(length=3, period=2)) if o is not None]
    obs = np.concatenate([o["obs"][..., 0] for o in out])
    mask = np.concatenate([o["mask"] for o in out])
    pairs = [(a, b) for seq, m in zip(obs.tolist(), mask) for a, b, ok in zip(seq, seq[1:], m[1:]) if ok]
    expected = [(0, 1), (1, 2), (2, 3), (3, 99), (100, 101), (101, 102),
                (10, 11), (11, 98), (110, 111), (111, 112), (112, 113), (113, 114), (114, 97)]
    assert sorted(pairs) == sorted(expected)


def test_episode_adder_emits_padded_whole_episodes():
    out = run(EpisodeAdder(max_len=5, gamma=0.5))
    assert [t for t, o in enumerate(out) if o is not None] == [1, 3, 6]
    np.testing.assert_array_equal(out[1]["obs"][0, :, 0], [10, 11, 98, 0, 0, 0])
    np.testing.assert_array_equal(out[1]["length"], [2])
    np.testing.assert_array_equal(out[1]["mask"][0], [1, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(out[1]["discount"][0], [0.5, 0.5, 0, 0, 0, 0])
    np.testing.assert_array_equal(out[3]["obs"][0, :, 0], [0, 1, 2, 3, 99, 0])
    np.testing.assert_array_equal(out[3]["length"], [4])
    np.testing.assert_array_equal(out[6]["obs"][0, :, 0], [110, 111, 112, 113, 114, 97])
    np.testing.assert_array_equal(out[6]["reward"][0], [4, 8, 16, 32, 64, 0])
    np.testing.assert_array_equal(out[6]["length"], [5])


def test_episode_longer_than_max_len_is_an_error():
    with pytest.raises(ShoalError, match="max_len=3"):
        run(EpisodeAdder(max_len=3))


def test_add_before_add_first_and_bad_shapes_are_errors():
    adder = TransitionAdder(gamma=0.9)
    step = StepResult(np.zeros((2, 1)), np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), np.zeros((2, 1)))
    with pytest.raises(ShoalError, match="add_first"):
        adder.add(np.zeros(2), step)
    adder.add_first(np.zeros((2, 1)))
    with pytest.raises(ShoalError, match="action"):
        adder.add(np.zeros(3), step)
    adder.add(np.zeros(2), step, {"a": np.zeros(2)})
    with pytest.raises(ShoalError, match="extras keys"):
        adder.add(np.zeros(2), step, {"b": np.zeros(2)})
