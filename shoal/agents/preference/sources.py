"""Where preference labels come from: a synthetic oracle on the env's reward, or a person at the terminal.

A source answers a batch of segment pairs with labels ``mu = P[first preferred]``: 1.0 (the first),
0.0 (the second) or 0.5 (equally good). Only a source may look at ``Segments.true_reward``; the
terminal source shows the person what the segments did, never what they scored.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO

import numpy as np

from shoal.agents.preference.segments import Segments
from shoal.errors import ConfigError

#: What a person types, and the label it means.
ANSWERS = {"1": 1.0, "2": 0.0, "=": 0.5}


class PreferenceSource(Protocol):
    """Labels pairs of segments."""

    def label(self, first: Segments, second: Segments) -> np.ndarray:
        """``[N]`` labels ``P[first[i] preferred over second[i]]`` in {1, 0, 0.5}."""

    def state(self) -> dict[str, Any]:
        """Checkpointable state (generators)."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""


class OracleSource:
    """Prefers the segment with the higher true return (Christiano et al.'s synthetic labeller).

    Returns within ``tie_margin`` of each other are labelled equal. With ``noise`` > 0 each answer is,
    with that probability, replaced by a uniformly random "1" or "2" (a careless rater).
    """

    def __init__(self, noise: float = 0.0, tie_margin: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= noise <= 1.0:
            raise ConfigError(f"oracle_noise must be in [0, 1], got {noise}; 0 answers every pair by its true return")
        if tie_margin < 0:
            raise ConfigError(f"oracle_tie_margin must be >= 0, got {tie_margin}")
        self.noise, self.tie_margin = float(noise), float(tie_margin)
        self.rng = np.random.default_rng(seed)

    def label(self, first: Segments, second: Segments) -> np.ndarray:
        diff = first.true_return - second.true_return
        labels = np.where(diff > self.tie_margin, 1.0, np.where(diff < -self.tie_margin, 0.0, 0.5))
        if self.noise > 0:
            careless = self.rng.random(len(labels)) < self.noise
            labels = np.where(careless, self.rng.integers(0, 2, len(labels)).astype(np.float64), labels)
        return labels

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


def describe_segment(seg: Segments, i: int, max_dims: int = 6) -> str:
    """A few lines on segment ``i``: its length and per-dimension observation and action statistics."""
    obs = seg.obs[i].reshape(seg.length, -1).astype(np.float64)
    act = seg.action[i].reshape(seg.length, -1).astype(np.float64)

    def row(name: str, x: np.ndarray) -> str:
        d = min(x.shape[1], max_dims)
        more = f" (+{x.shape[1] - d} dims)" if x.shape[1] > d else ""
        fmt = lambda v: "[" + ", ".join(f"{a:+.2f}" for a in v[:d]) + "]"  # noqa: E731
        return (f"  {name}: first {fmt(x[0])}  last {fmt(x[-1])}  mean {fmt(x.mean(0))}  "
                f"min {fmt(x.min(0))}  max {fmt(x.max(0))}{more}")

    return "\n".join([f"  steps: {seg.length}", row("observation", obs), row("action", act),
                      f"  mean |action|: {np.abs(act).mean():.3f}"])


class TerminalSource:
    """Asks a person: both segments are summarised and the answer read from ``stdin``.

    The person types ``1`` (the first is better), ``2`` (the second) or ``=`` (equally good);
    anything else is asked again. End of input is an error, since the run cannot go on without labels.
    """

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.stdin, self.stdout = stdin, stdout

    def _ask(self, prompt: str) -> float:
        out = self.stdout or sys.stdout
        inp = self.stdin or sys.stdin
        while True:
            out.write(prompt)
            out.flush()
            line = inp.readline()
            if line == "":
                raise ConfigError("the preference prompt reached the end of its input; answer on a terminal, "
                                  "or train with preference_source=oracle")
            answer = line.strip()
            if answer in ANSWERS:
                return ANSWERS[answer]
            out.write(f"please type 1, 2 or = (got {answer!r})\n")

    def label(self, first: Segments, second: Segments) -> np.ndarray:
        out = self.stdout or sys.stdout
        labels = np.empty(len(first))
        for i in range(len(first)):
            out.write(f"\npair {i + 1} of {len(first)}\nsegment 1:\n{describe_segment(first, i)}\n"
                      f"segment 2:\n{describe_segment(second, i)}\n")
            labels[i] = self._ask("which is better? 1, 2 or = : ")
        return labels

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def make_source(name: str, seed: int = 0, noise: float = 0.0, tie_margin: float = 0.0) -> PreferenceSource:
    """The source named by ``preference_source``: ``oracle`` or ``terminal``."""
    if name == "oracle":
        return OracleSource(noise, tie_margin, seed)
    if name == "terminal":
        return TerminalSource()
    raise ConfigError(f"unknown preference_source {name!r}; use oracle or terminal")
