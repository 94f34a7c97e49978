"""The one schedule function against hand-computed values, and the Ape-X per-actor spread."""

from __future__ import annotations

import pytest

from shoal.core.schedules import LinearSchedule, per_actor_exponent, schedule


@pytest.mark.parametrize("start, end, progress, kind, horizon, expected", [
    (1.0, 0.1, 0.7, "constant", 1.0, 1.0),
    (1.0, 0.1, 0.25, "linear", 0.5, 0.55),
    (1.0, 0.1, 0.9, "linear", 0.5, 0.1),  # stays at end after the horizon
    (1.0, 0.05, 50, "linear", 100, 0.525),  # DQN's epsilon over env steps
    (1.0, 0.05, 10_000, "linear", 100, 0.05),
    (1.0, 0.05, 5, "linear", 0, 0.05),  # no horizon: end at once
    (3e-4, 0.0, 0.25, "linear", 1.0, 2.25e-4),  # a learning rate decayed to 0 over the run
    (3e-4, 0.0, -0.5, "linear", 1.0, 3e-4),  # negative progress counts as 0
    (1.0, 0.0, 0.5, "exponential", 0.5, 0.01),  # 99% of the way at the horizon
    (1.0, 0.0, 0.25, "exponential", 0.5, 0.1),
])
def test_schedule(start, end, progress, kind, horizon, expected) -> None:
    assert schedule(start, end, progress, kind, horizon) == pytest.approx(expected)


def test_schedule_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        schedule(1.0, 0.0, 0.5, "cosine")


def test_linear_schedule_is_the_linear_schedule_over_steps() -> None:
    beta = LinearSchedule(0.4, 1.0, 100)
    assert [beta(s) for s in (0, 50, 100, 1000)] == pytest.approx([0.4, 0.7, 1.0, 1.0])
    assert all(beta(s) == schedule(0.4, 1.0, s, "linear", 100) for s in range(0, 150, 7))
    assert LinearSchedule(0.4, 1.0, 0)(0) == 1.0
    with pytest.raises(ValueError, match="schedule steps must be >= 0"):
        LinearSchedule(0.4, 1.0, -1)


@pytest.mark.parametrize("base, actor_id, num_actors, alpha, expected", [
    (0.4, 0, 8, 7.0, 0.4),
    (0.4, 7, 8, 7.0, 0.4**8),
    (0.4, 3, 8, 7.0, 0.4**4),  # 1 + 7 * 3 / 7
    (0.5, 1, 3, 2.0, 0.5**2),
    (0.4, 0, 1, 7.0, 0.4),  # a single actor keeps the base
    (0.3, 3, 4, 3.0, 0.3**4),  # Ape-X DPG's noise scales
    (0.3, 5, 8, 0.0, 0.3),  # alpha 0: every actor the same
])
def test_per_actor_exponent(base, actor_id, num_actors, alpha, expected) -> None:
    assert per_actor_exponent(base, actor_id, num_actors, alpha) == pytest.approx(expected)
    spread = [per_actor_exponent(base, i, 8, 3.0) for i in range(8)]
    assert all(a > b for a, b in zip(spread, spread[1:]))
