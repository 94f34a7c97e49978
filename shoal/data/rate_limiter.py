"""The rate limiter: how many samples a table allows per insert (as Reverb defines it).

The limiter tracks ``diff = inserts * samples_per_insert - samples`` and keeps it in the
band ``[min_diff, max_diff]``. With an ``error_buffer`` of ``e`` the band is centred on
``samples_per_insert * min_size_to_sample``: ``[offset - e, offset + e]``; pass
``(min_diff, max_diff)`` to set it directly.

Calls move many items at once, so admission is decided per call:

- a sample of ``n`` is admitted when ``size >= min_size_to_sample`` and its first item
  fits (``diff - 1 >= min_diff``): a learner can run ahead by at most one batch;
- an insert of ``n`` is admitted while ``size < min_size_to_sample``, then when the whole
  batch fits (``diff + n * samples_per_insert <= max_diff``); a batch too large to ever
  fit the band is admitted when its first item fits.

With a band at least ``1 + samples_per_insert`` wide (checked) an inserting thread and a
sampling thread can never both wait, whatever their batch sizes. A queue therefore never
overflows as long as it is larger than one insert batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.errors import ConfigError, ShoalError

_INF = float("inf")


class RateLimited(ShoalError):
    """A table call was refused by its rate limiter (immediately, or after waiting its timeout)."""


@dataclass
class RateLimiter:
    """Admits inserts and samples so that samples track ``samples_per_insert`` times the inserts."""

    samples_per_insert: float = 1.0
    """Target number of sampled items per inserted item (inf: no limit, only ``min_size_to_sample``)."""
    min_size_to_sample: int = 1
    """Items the table must hold before any sample."""
    error_buffer: float | tuple[float, float] = _INF
    """Half-width of the allowed band of ``diff`` around its target, or ``(min_diff, max_diff)``."""

    def __post_init__(self) -> None:
        if self.min_size_to_sample < 1:
            raise ConfigError(f"min_size_to_sample must be at least 1, got {self.min_size_to_sample}; "
                              "a table cannot sample while empty")
        if not self.samples_per_insert > 0:
            raise ConfigError(f"samples_per_insert must be positive, got {self.samples_per_insert}; "
                              "use inf for no ratio limit")
        if isinstance(self.error_buffer, (tuple, list)):
            self.min_diff, self.max_diff = (float(x) for x in self.error_buffer)
        else:
            offset = self.samples_per_insert * self.min_size_to_sample
            if self.samples_per_insert == _INF or self.error_buffer == _INF:
                self.min_diff, self.max_diff = -_INF, _INF
            else:
                self.min_diff, self.max_diff = offset - self.error_buffer, offset + self.error_buffer
        width = self.max_diff - self.min_diff
        need = 1.0 + (self.samples_per_insert if self.samples_per_insert != _INF else 0.0)
        if not width >= need:
            raise ConfigError(f"rate limiter band [{self.min_diff}, {self.max_diff}] is narrower than "
                              f"1 + samples_per_insert = {need}, so inserts and samples could block each other "
                              "forever; widen error_buffer")
        self.inserts = 0
        self.samples = 0

    @property
    def diff(self) -> float:
        if self.samples_per_insert == _INF:
            return _INF
        return self.inserts * self.samples_per_insert - self.samples

    def can_insert(self, n: int, size: int) -> bool:
        """Whether an insert of ``n`` items into a table holding ``size`` is admitted now."""
        if n <= 0 or size < self.min_size_to_sample or self.max_diff == _INF:
            return True
        batch = n * self.samples_per_insert
        if batch + 1 > self.max_diff - self.min_diff:  # could never fit whole: admit on its first item
            return self.diff + self.samples_per_insert <= self.max_diff
        return self.diff + batch <= self.max_diff

    def can_sample(self, n: int, size: int) -> bool:
        """Whether a sample of ``n`` items from a table holding ``size`` is admitted now."""
        if size < self.min_size_to_sample or size == 0:
            return False
        return n <= 0 or self.min_diff == -_INF or self.diff - 1 >= self.min_diff

    def record_insert(self, n: int) -> None:
        self.inserts += int(n)

    def record_sample(self, n: int) -> None:
        self.samples += int(n)

    def describe(self) -> str:
        """The current counters, for error messages."""
        return (f"inserts={self.inserts}, samples={self.samples}, samples_per_insert={self.samples_per_insert}, "
                f"band=[{self.min_diff}, {self.max_diff}], min_size_to_sample={self.min_size_to_sample}")

    def state(self) -> dict[str, Any]:
        return {"inserts": self.inserts, "samples": self.samples}

    def load_state(self, state: dict[str, Any]) -> None:
        self.inserts = int(state["inserts"])
        self.samples = int(state["samples"])

    @classmethod
    def min_size(cls, n: int) -> "RateLimiter":
        """No ratio: sample as soon as the table holds ``n`` items."""
        return cls(samples_per_insert=_INF, min_size_to_sample=n)

    @classmethod
    def ratio(cls, samples_per_insert: float, min_size_to_sample: int, error_buffer: float) -> "RateLimiter":
        """Reverb's SampleToInsertRatio."""
        return cls(samples_per_insert, min_size_to_sample, error_buffer)

    @classmethod
    def queue(cls, size: int) -> "RateLimiter":
        """Each item sampled exactly once, at most ``size`` waiting: inserts block when full."""
        return cls(samples_per_insert=1.0, min_size_to_sample=1, error_buffer=(0.0, float(size)))
