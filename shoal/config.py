"""Typed, self-validating configs built from dataclass defaults, YAML files and ``key=value``.

Every config is a dataclass whose fields carry a one-line docstring (in ``fields_doc``)
and whose ``__post_init__`` validates values. :func:`build` coerces and checks types,
rejects unknown keys (with a suggestion) and raises :class:`ConfigError` in one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from shoal.errors import ConfigError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def coerce(name: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise a ConfigError naming ``name``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(name, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{name}={value!r} has the wrong type; expected {' or '.join(_type_name(a) for a in args)}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not allowed; use one of {list(allowed)}")
        return value
    if origin in (tuple, list):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r} must be a list, e.g. {name}=[64,64]")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        return tuple(coerce(name, v, item_tp) for v in value) if origin is tuple else [coerce(name, v, item_tp) for v in value]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{name}={value!r} must be true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
                if f.is_integer():
                    return int(f)
            except ValueError:
                pass
        raise ConfigError(f"{name}={value!r} must be an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} must be a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{name}={value!r} must be a number")
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r} must be a string")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return build(tp, value, prefix=f"{name}.")
    return value


def build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from ``values``, coercing types and validating."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(names))}"
            raise ConfigError(f"unknown config key {prefix}{key!r} for {cls.__name__}; {hint}")
        kwargs[key] = coerce(prefix + key, value, hints[key])
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid {cls.__name__}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict (tuples as lists) suitable for YAML."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def require(cond: bool, message: str) -> None:
    """Raise a ConfigError with ``message`` unless ``cond``; for ``__post_init__`` checks."""
    if not cond:
        raise ConfigError(message)


def positive(cfg: Any, *names: str) -> None:
    """Check that each named numeric field is > 0."""
    for n in names:
        v = getattr(cfg, n)
        require(v > 0, f"{n} must be > 0, got {v}; pass e.g. {n}={_example(v)}")


def in_range(cfg: Any, name: str, lo: float, hi: float) -> None:
    """Check ``lo <= field <= hi``."""
    v = getattr(cfg, name)
    require(lo <= v <= hi, f"{name} must be in [{lo}, {hi}], got {v}")


def _example(v: Any) -> str:
    return "1" if isinstance(v, int) else "0.001"


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are read as YAML (numbers, lists, booleans)."""
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"override {p!r} is not of the form key=value, e.g. lr=3e-4")
        k, v = p.split("=", 1)
        try:
            val = yaml.safe_load(v) if v.strip() else ""
        except yaml.constructor.ConstructorError as e:
            if _python_tag(e):
                raise ConfigError(f"override {k.strip()!r} uses {_tag_of(e)}, which shoal refuses (tags that build "
                                  "objects could run code); write a plain number, string, list or mapping") from None
            val = v
        except yaml.YAMLError:
            val = v
        if isinstance(val, str):
            try:  # YAML 1.1 reads 1e-3 as a string
                val = float(val)
            except ValueError:
                pass
        out[k.strip()] = val
    return out


def _python_tag(e: yaml.constructor.ConstructorError) -> bool:
    """Whether the safe loader refused a ``!!python/...`` tag (one that would build an object or call code)."""
    return "python/" in str(e.problem or "") and "could not determine a constructor for the tag" in str(e.problem)


def _tag_of(e: yaml.constructor.ConstructorError) -> str:
    """``the YAML tag '!!python/object/...'`` from a safe loader's refusal."""
    import re

    m = re.search(r"tag '([^']+)'", str(e.problem or ""))
    tag = m.group(1).replace("tag:yaml.org,2002:", "!!") if m else "a tag"
    return f"the YAML tag {tag!r}" if m else "a YAML tag"


def load_yaml_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error when it is missing or malformed."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(p)!r} ({e.strerror}); check the path") from None
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        if not _python_tag(e):
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file {str(p)!r} is not valid YAML{where} ({e.problem}); fix it") from None
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {str(p)!r} uses {_tag_of(e)}{where}, which shoal refuses (tags that build "
                          "objects could run code; nothing was run); write plain values") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of key: value, got {type(data).__name__}")
    return data
