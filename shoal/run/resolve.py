"""Resolving a run's configuration: defaults < per-env YAML < --config file < key=value."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.agents import registry
from shoal.config import build, load_yaml_file, to_dict
from shoal.errors import ConfigError
from shoal.settings import RunConfig

RUN_KEYS = {f.name for f in dataclasses.fields(RunConfig)}


@dataclass
class ResolvedConfig:
    """Everything that defines a run, validated."""

    algo: str
    env: Any  # an id, or a factory for the Python API
    env_id: str
    run: RunConfig
    agent: Any

    def to_yaml_dict(self) -> dict[str, Any]:
        return {"algo": self.algo, "env": self.env_id, "run": to_dict(self.run), "agent": to_dict(self.agent)}


def split_keys(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a flat or sectioned mapping into (run keys, agent keys)."""
    run: dict[str, Any] = {}
    agent: dict[str, Any] = {}
    for k, v in values.items():
        if k in ("run", "agent") and isinstance(v, dict):
            (run if k == "run" else agent).update(v)
        elif k in ("algo", "env"):
            continue
        elif k in RUN_KEYS:
            run[k] = v
        else:
            agent[k] = v
    return run, agent


def resolve(algo: str, env: Any, env_id: str, config_file: str | Path | None, overrides: dict[str, Any],
            cli_run: dict[str, Any], base: dict[str, Any] | None = None) -> ResolvedConfig:
    """Merge every source of settings and validate them; raises ConfigError in one line.

    ``base`` is a previously resolved ``config.yaml`` (when resuming): it replaces the
    shipped defaults, so a resumed run keeps its settings unless explicitly overridden.
    """
    spec = registry.get(algo)
    if base is not None:
        run_vals, agent_vals = dict(base.get("run", {})), dict(base.get("agent", {}))
    else:
        run_vals, agent_vals = {}, dict(spec.defaults(env_id))
        d_run, d_agent = split_keys(agent_vals)
        run_vals.update(d_run)
        agent_vals = d_agent
    if config_file:
        f_run, f_agent = split_keys(load_yaml_file(config_file))
        run_vals.update(f_run)
        agent_vals.update(f_agent)
    o_run, o_agent = split_keys(overrides)
    run_vals.update(o_run)
    agent_vals.update(o_agent)
    run_vals.update({k: v for k, v in cli_run.items() if v is not None})
    run_cfg = build(RunConfig, run_vals)
    try:
        agent_cfg = build(spec.config_cls(), agent_vals)
    except ConfigError as e:
        raise ConfigError(f"{algo}: {e}") from None
    return ResolvedConfig(algo, env, env_id, run_cfg, agent_cfg)
