"""When labels are asked for: a budget spent at a decreasing rate, as in Christiano et al. 2017.

The paper asks for labels at a rate proportional to ``tau / (tau + t)`` after an initial batch;
the labels asked for by env step ``t`` (counted from the first query at ``start``) are then

    N(t) = initial + (max_labels - initial) * log(1 + (t - start) / tau) / log(1 + (horizon - start) / tau),

so the whole budget is spent by ``horizon``. Labels are asked for in batches, every ``every`` env steps.
"""

from __future__ import annotations

import math

from shoal.errors import ConfigError


class LabelSchedule:
    """How many labels should have been asked for by each env step."""

    def __init__(self, max_labels: int, initial: int, every: int, start: int, horizon: int, tau: float) -> None:
        if max_labels < 1 or not 0 < initial <= max_labels:
            raise ConfigError(f"need 0 < initial_labels <= max_labels, got initial_labels={initial}, "
                              f"max_labels={max_labels}")
        if every < 1 or tau <= 0:
            raise ConfigError(f"label_every must be >= 1 and label_decay_steps > 0, got {every} and {tau}")
        self.max_labels, self.initial, self.every = int(max_labels), int(initial), int(every)
        self.start, self.tau = int(start), float(tau)
        self.horizon = max(int(horizon), self.start + 1)

    def target(self, env_steps: int) -> int:
        """Labels that should have been asked for by ``env_steps`` (0 before ``start``)."""
        if env_steps < self.start:
            return 0
        t = min(env_steps, self.horizon) - self.start
        frac = math.log1p(t / self.tau) / math.log1p((self.horizon - self.start) / self.tau)
        return min(self.max_labels, self.initial + int(round((self.max_labels - self.initial) * frac)))

    def due(self, env_steps: int, asked: int, last_query_step: int) -> int:
        """Labels to ask for now: none until ``every`` steps passed since the last query (the first at once)."""
        if asked > 0 and env_steps - last_query_step < self.every:
            return 0
        return max(0, self.target(env_steps) - asked)
