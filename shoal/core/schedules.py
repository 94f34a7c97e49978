"""Schedules: a value annealed over a run (learning rates, clip ranges, epsilons, PER's beta).

One function computes every schedule in shoal; :class:`LinearSchedule` is its linear
case bound to a step horizon, for learners that look it up every step.
"""

from __future__ import annotations

from dataclasses import dataclass


def schedule(start: float, end: float, progress: float, kind: str = "linear", horizon: float = 1.0) -> float:
    """The value at ``progress`` of a schedule from ``start`` towards ``end``.

    ``constant``: always ``start``. ``linear``: ``start + (end - start) * progress / horizon``,
    ``end`` from ``progress = horizon`` on. ``exponential``: ``end + (start - end) *
    0.01 ** (progress / horizon)`` (99% of the way at the horizon). ``progress`` and
    ``horizon`` share a unit (fraction of the run, env steps, learner steps); a horizon of 0
    or less gives ``end`` at once. Negative progress counts as 0.
    """
    if kind == "constant":
        return float(start)
    if kind not in ("linear", "exponential"):
        raise ValueError(f"unknown schedule {kind!r}; use constant, linear or exponential")
    if horizon <= 0:
        return float(end)
    frac = max(progress, 0.0) / horizon
    if kind == "linear":
        return float(start + (end - start) * min(frac, 1.0))
    return float(end + (start - end) * 0.01**frac)


@dataclass(frozen=True)
class LinearSchedule:
    """A value moving linearly from ``start`` to ``end`` over ``steps`` steps, then staying at ``end``.

    For PER's beta: ``LinearSchedule(0.4, 1.0, total_steps)(step)``.
    """

    start: float
    """Value at step 0."""
    end: float
    """Value from ``steps`` on."""
    steps: float
    """Steps to go from start to end (0: ``end`` at once)."""

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"schedule steps must be >= 0, got {self.steps}; pass the number of steps to anneal over")

    def __call__(self, step: float) -> float:
        return schedule(self.start, self.end, step, "linear", self.steps)


def per_actor_exponent(base: float, actor_id: int, num_actors: int, alpha: float) -> float:
    """Actor ``i`` of ``N``'s value ``base ** (1 + alpha * i / (N - 1))``: Ape-X's spread of exploration rates.

    ``base`` for a single actor or ``alpha = 0``. Ape-X DQN spreads epsilons this way, Ape-X
    DPG the noise scales.
    """
    if num_actors <= 1 or alpha == 0:
        return float(base)
    return float(base ** (1.0 + alpha * actor_id / (num_actors - 1)))
