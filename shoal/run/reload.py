"""Re-loading a finished run: its config, networks and a policy, for `shoal eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoal.agents import registry
from shoal.config import build, load_yaml_file
from shoal.core.seeding import derive_seed
from shoal.envs.make import env_spec
from shoal.errors import CheckpointError
from shoal.io.checkpoint import list_checkpoints, load_newest_checkpoint
from shoal.run.evaluate import evaluate, evaluation_env_id


def load_policy(run_dir: Path) -> tuple[Any, dict[str, Any], int]:
    """The deterministic policy of a run's last checkpoint, its config and the checkpoint's env steps."""
    builder, net, cfg, steps = load_agent(run_dir)
    return builder.make_policy(net, evaluation=True), cfg, steps


def load_agent(run_dir: Path) -> tuple[Any, Any, dict[str, Any], int]:
    """``(builder, networks)`` of a run's last checkpoint, its config and the checkpoint's env steps."""
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise CheckpointError(f"{run_dir} has no config.yaml; pass a run directory written by `shoal train`")
    cfg = load_yaml_file(cfg_path)
    if not list_checkpoints(run_dir / "checkpoints"):
        raise CheckpointError(f"{run_dir} has no checkpoint; train it first (or resume it)")
    # The networks only: skip reading the replay. A corrupt newest checkpoint falls back, with a warning.
    newest, tree, meta = load_newest_checkpoint(run_dir / "checkpoints", detached=False)
    spec = registry.get(cfg["algo"])
    agent_cfg = build(spec.config_cls(), cfg["agent"])
    builder = spec.builder_cls()(agent_cfg, env_spec(cfg["env"]), total_steps=cfg["run"]["steps"], seed=cfg["run"]["seed"])
    net = builder.make_networks()
    try:
        net.load_state_dict(tree["program"]["learner"]["networks"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {newest} does not match the run's networks ({type(e).__name__}); "
                              "was config.yaml edited?") from None
    return builder, net, cfg, int(meta.get("env_steps", 0))


def evaluate_run(run_dir: Path, episodes: int = 20, seed: int | None = None) -> dict[str, Any]:
    """Evaluate a run's last checkpoint with deterministic actions."""
    from shoal.run.alphazero import evaluate_game_run, is_game_run

    if is_game_run(Path(run_dir)):  # board games: matches of the engine against the baselines
        return evaluate_game_run(Path(run_dir), episodes, seed)
    policy, cfg, steps = load_policy(Path(run_dir))
    spec = env_spec(cfg["env"])
    bounds = None if spec.discrete else (spec.action_low, spec.action_high)
    env = cfg["run"].get("eval_env") or evaluation_env_id(cfg["env"])
    result = evaluate(policy, env, episodes, derive_seed(cfg["run"]["seed"], "eval") if seed is None else seed, bounds,
                      cfg["run"].get("eval_max_steps", 10_000))
    result["env_steps"] = steps
    return result
