"""Resolving a run's configuration: defaults < per-env YAML < --config file < key=value."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from shoal.agents import registry
from shoal.config import build, load_yaml_file, to_dict
from shoal.envs.ids import bare_env_id
from shoal.errors import ConfigError
from shoal.settings import RunConfig

RUN_KEYS = {f.name for f in dataclasses.fields(RunConfig)}

#: Settings a resumed run must keep: they shape the checkpointed state (networks, optimiser,
#: replay, normalisers, actors and their env copies) or the seeds derived for it. Everything
#: else (steps, learning rates, loss coefficients, schedules, evaluation and logging,
#: backend, device, threads) may change with ``--resume DIR key=value``.
FIXED_ON_RESUME: dict[str, tuple[str, ...]] = {
    "run": ("seed", "topology", "num_actors", "num_learners", "vector"),
    "agent": ("hidden", "head_hidden", "activation", "dueling", "shared_torso", "num_critics", "baseline", "autotune",
              "optimizer", "normalize_obs", "normalize_reward", "num_envs", "rollout_length", "episodes_per_update",
              "buffer_size", "prioritized", "frame_storage", "checkpoint_replay", "n_step", "exploration", "noise",
              "encoder", "lstm_hidden", "burn_in", "trace_length", "sequence_period", "recurrent", "lstm_layers",
              "critic_lstm", "num_atoms", "v_min", "v_max", "value_rescaling", "rescale_eps", "gamma",
              "ensemble_size", "reward_hidden", "segment_memory", "segment_length",
              "goal_fn", "num_goals", "success_window"),
}


@dataclass
class ResolvedConfig:
    """Everything that defines a run, validated."""

    algo: str
    env: Any  # an id, or a factory for the Python API
    env_id: str
    run: RunConfig
    agent: Any
    topology: Any = None
    """The topology's own settings (a dataclass; None for a topology without settings)."""
    notes: list[str] = field(default_factory=list)
    """What a user should see before training: which defaults were applied, what a resume changed."""

    def to_yaml_dict(self) -> dict[str, Any]:
        return {"algo": self.algo, "env": self.env_id, "run": to_dict(self.run), "agent": to_dict(self.agent),
                "topology": to_dict(self.topology) if self.topology is not None else {}}


def split_keys(values: dict[str, Any], topology: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a flat or sectioned mapping into (run keys, agent keys); topology settings (a ``topology:``
    section, or ``topology.KEY`` keys) go into ``topology`` when given."""
    run: dict[str, Any] = {}
    agent: dict[str, Any] = {}
    for k, v in values.items():
        if k == "topology" and isinstance(v, dict):
            if topology is not None:
                topology.update(v)
        elif k.startswith("topology."):
            if topology is not None:
                topology[k.split(".", 1)[1]] = v
        elif k in ("run", "agent") and isinstance(v, dict):
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
    topo_vals: dict[str, Any] = {}
    if base is not None:
        run_vals, agent_vals = dict(base.get("run", {})), dict(base.get("agent", {}))
        topo_vals.update(base.get("topology") or {})
    else:
        run_vals, agent_vals = {}, dict(spec.defaults(bare_env_id(env_id)))
        d_run, d_agent = split_keys(agent_vals, topo_vals)
        run_vals.update(d_run)
        agent_vals = d_agent
    if config_file:
        f_run, f_agent = split_keys(load_yaml_file(config_file), topo_vals)
        run_vals.update(f_run)
        agent_vals.update(f_agent)
    o_run, o_agent = split_keys(overrides, topo_vals)
    run_vals.update(o_run)
    agent_vals.update(o_agent)
    run_vals.update({k: v for k, v in cli_run.items() if v is not None})
    run_cfg = build(RunConfig, run_vals)
    run_cfg.topology = run_cfg.topology or spec.topology
    try:
        agent_cfg = build(spec.config_cls(), agent_vals)
    except ConfigError as e:
        raise ConfigError(f"{algo}: {e}") from None
    resolved = ResolvedConfig(algo, env, env_id, run_cfg, agent_cfg, _topology_settings(run_cfg.topology, topo_vals))
    resolved.notes.append(resume_changes(base, resolved) if base is not None else defaults_note(algo, env_id))
    return resolved


def _topology_settings(name: str, values: dict[str, Any]) -> Any:
    """Topology ``name``'s settings dataclass from ``values`` (a ConfigError naming the topology if wrong)."""
    from shoal.topologies import topology_settings

    cls = topology_settings(name)
    if cls is None:
        if values:
            raise ConfigError(f"topology {name!r} has no settings, got {', '.join(sorted(values))}; drop the topology.* keys")
        return None
    try:
        return build(cls, values)
    except ConfigError as e:
        raise ConfigError(f"topology {name}: {e}") from None


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v)


def per_env_defaults(algo: str, env_id: str) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """``(file, entry for this env or None, the file's "default" section or None without a file)``.

    The same lookup as :meth:`AlgoSpec.defaults` (``{**default, **entry}`` is what it returns),
    split so a run can say where its defaults came from.
    """
    registry.get(algo)
    name = f"shoal/configs/{algo}.yaml"
    try:
        table = yaml.safe_load(resources.files("shoal.configs").joinpath(f"{algo}.yaml").read_text()) or {}
    except FileNotFoundError:
        return name, None, None
    env_id = bare_env_id(env_id)
    keys = [k for k in (env_id.split("/", 1)[-1] if env_id.startswith("shoal/") else None, env_id) if k in table]
    entry: dict[str, Any] | None = None
    for k in keys:
        entry = {**(entry or {}), **(table[k] or {})}
    return name, entry, dict(table.get("default") or {})


def defaults_note(algo: str, env_id: str) -> str:
    """One line naming the per-env defaults a new run of ``algo`` on ``env_id`` starts from."""
    name, entry, generic = per_env_defaults(algo, env_id)
    env = bare_env_id(env_id)
    if generic is None:
        return f"no per-env defaults for {env} ({name} does not exist); using the algorithm's generic defaults"
    shared = f" and the file's default section: {' '.join(f'{k}={_fmt(v)}' for k, v in generic.items())}" if generic else ""
    if entry is None:
        return f"no per-env defaults for {env} in {name}; using the algorithm's generic defaults{shared}"
    applied = " ".join(f"{k}={_fmt(v)}" for k, v in {**generic, **entry}.items())
    return f"defaults for {env} from {name}: {applied or '(none)'}"


def resume_changes(base: dict[str, Any], resolved: ResolvedConfig) -> str:
    """One line saying what a resume changes; a ConfigError if it changes a setting fixed for the run."""
    new = {"run": to_dict(resolved.run), "agent": to_dict(resolved.agent),
           "topology": to_dict(resolved.topology) if resolved.topology is not None else {}}
    changed: list[str] = []
    for section in ("run", "agent", "topology"):
        old = base.get(section) or {}
        for k, v in new[section].items():
            if k not in old or old[k] == v:
                continue
            if k in FIXED_ON_RESUME.get(section, ()):
                raise ConfigError(f"{k} cannot change when resuming (the run was built with {k}={_fmt(old[k])}, asked for "
                                  f"{_fmt(v)}): it shapes the checkpointed state; start a new run with --run-dir instead")
            changed.append(f"{k} {_fmt(old[k])} -> {_fmt(v)}")
    return "resuming with the run's config.yaml" + (f"; changed: {', '.join(changed)}" if changed else "; no setting changed")
