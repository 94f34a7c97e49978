"""Hyperparameter search spaces for ``shoal tune``: parsed from YAML, sampled through an Optuna trial.

A space file maps algorithm names to parameters; each parameter is one of::

    lr:         {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
    epochs:     {type: int, low: 2, high: 20}            # optional step: 2, or log: true
    gamma:      {type: categorical, choices: [0.95, 0.98, 0.99]}
    hidden:     {type: categorical, choices: [[64, 64], [256, 256]]}

Parameter names are the settings ``shoal train`` takes as ``key=value`` (the algorithm's
settings, run settings, or ``topology.KEY``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import yaml

from shoal.config import load_yaml_file
from shoal.errors import ConfigError

#: Run settings the tuner sets itself; a space may not search over them.
TUNER_OWNED = ("steps", "seed", "backend", "ray_address", "eval_every")
SHIPPED = "shoal/configs/search_spaces.yaml"
_PRIMITIVE = (bool, int, float, str)


class Suggests(Protocol):
    """The part of ``optuna.trial.Trial`` a space samples through."""

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class Param:
    """One searched setting."""

    name: str
    kind: str
    """float, int or categorical."""
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def labels(self) -> list[Any]:
        """The choices as Optuna stores them: scalars as they are, lists (e.g. ``hidden``) as JSON text."""
        return [c if c is None or isinstance(c, _PRIMITIVE) else json.dumps(c) for c in self.choices]

    def suggest(self, trial: Suggests) -> Any:
        """Sample this setting through ``trial``; the value is what ``key=value`` would set."""
        if self.kind == "float":
            assert self.low is not None and self.high is not None
            return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)
        if self.kind == "int":
            assert self.low is not None and self.high is not None
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        labels = self.labels()
        picked = trial.suggest_categorical(self.name, labels)
        return self.choices[labels.index(picked)]

    def decode(self, stored: Any) -> Any:
        """A value as Optuna stored it (e.g. in ``best_params``) back to the setting's value."""
        try:
            if self.kind != "categorical":
                return int(stored) if self.kind == "int" else float(stored)
            return self.choices[self.labels().index(stored)]
        except (TypeError, ValueError):
            raise ConfigError(f"the study stores {self.name}={stored!r}, which the search space cannot give back "
                              f"(a {self.kind} parameter{' with choices ' + str(list(self.choices)) if self.choices else ''}); "
                              "use the space the study was made with") from None


def _param(algo: str, name: str, spec: Any, where: str) -> Param:
    at = f"{where}: {algo}.{name}"
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{at} must be a mapping with a type (float, int or categorical), got {spec!r}")
    kind = spec["type"]
    extra = set(spec) - {"type", "low", "high", "log", "step", "choices"}
    if extra:
        raise ConfigError(f"{at} has unknown keys {sorted(extra)}; a parameter takes type, low, high, log, step or choices")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{at} is categorical but has no choices list; add e.g. choices: [0.95, 0.99]")
        if set(spec) - {"type", "choices"}:
            raise ConfigError(f"{at} is categorical: it takes only choices, not {sorted(set(spec) - {'type', 'choices'})}")
        return Param(name, kind, choices=tuple(choices))
    if kind not in ("float", "int"):
        raise ConfigError(f"{at} has type {kind!r}; use float, int or categorical")
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{at} needs low and high, e.g. {{type: {kind}, low: 1, high: 10}}")
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    for key, v in (("low", low), ("high", high), ("step", step)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or (kind == "int" and not float(v).is_integer())):
            raise ConfigError(f"{at}: {key}={v!r} must be {'an integer' if kind == 'int' else 'a number'} "
                              "(write floats like 1.0e-5: YAML reads 1e-5 as text)")
    if not low < high:
        raise ConfigError(f"{at}: low={low} must be below high={high}")
    if log and low <= 0:
        raise ConfigError(f"{at}: log scale needs low > 0, got low={low}")
    if log and step is not None:
        raise ConfigError(f"{at}: log and step cannot be combined; drop one")
    if step is not None and step <= 0:
        raise ConfigError(f"{at}: step must be > 0, got {step}")
    return Param(name, kind, low=float(low), high=float(high), log=log, step=None if step is None else float(step))


def _settings_of(algo: str) -> set[str]:
    from shoal.agents import registry
    from shoal.settings import RunConfig

    agent = {f.name for f in dataclasses.fields(registry.get(algo).config_cls())}
    return agent | {f.name for f in dataclasses.fields(RunConfig)}


def load_space(algo: str, path: str | Path | None = None) -> list[Param]:
    """The search space of ``algo`` from ``path`` (default: the shipped ``search_spaces.yaml``)."""
    valid = _settings_of(algo)  # an unknown algorithm is named as such first
    if path is None:
        table = yaml.safe_load(resources.files("shoal.configs").joinpath("search_spaces.yaml").read_text()) or {}
        where = SHIPPED
    else:
        table, where = load_yaml_file(path), str(path)
    if algo not in table:
        known = ", ".join(sorted(table)) or "none"
        raise ConfigError(f"{where} has no search space for {algo!r} (it has: {known}); add a section {algo}: "
                          "or pass --space FILE")
    section = table[algo]
    if not isinstance(section, dict) or not section:
        raise ConfigError(f"{where}: the {algo} section must map settings to parameters, got {section!r}")
    params = []
    for name, spec in section.items():
        name = str(name)
        if name in TUNER_OWNED:
            raise ConfigError(f"{where}: {algo}.{name} is set by the tuner itself (--steps, --seed, --evals); "
                              "remove it from the space")
        if not name.startswith("topology.") and name not in valid:
            close = difflib.get_close_matches(name, sorted(valid), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see the algorithm's settings in shoal/configs"
            raise ConfigError(f"{where}: {algo}.{name} is not a setting of {algo}; {hint}")
        params.append(_param(algo, name, spec, where))
    return params


def sample(space: list[Param], trial: Suggests) -> dict[str, Any]:
    """One value per parameter of ``space``, sampled through ``trial``."""
    return {p.name: p.suggest(trial) for p in space}


def decode(space: list[Param], stored: dict[str, Any]) -> dict[str, Any]:
    """Optuna's stored parameter values (``trial.params``) as settings, in the space's order."""
    by_name = {p.name: p for p in space}
    return {k: by_name[k].decode(v) if k in by_name else v for k, v in stored.items()}


def plain(value: Any) -> Any:
    """A value YAML writes readably (numpy scalars and tuples become plain Python)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value
