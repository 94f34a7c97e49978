"""Training AlphaZero on a board game: the run directory, the self-play loop, strength evaluations.

The same contract as every shoal run (``config.yaml``, ``run.json``, ``metrics.csv``,
``checkpoints/``, ``eval.json``, ``--resume``), with games in place of Gymnasium envs:
``env_steps`` counts self-play moves, and evaluations are matches of the deterministic
engine (at its recorded search size) against the baselines.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from shoal.backends import make_backend
from shoal.config import load_yaml_file
from shoal.core.seeding import derive_seed
from shoal.core.threads import set_threads
from shoal.envs.games import game_name
from shoal.errors import CheckpointError, ConfigError
from shoal.io.checkpoint import (
    atomic_write_text,
    delete_checkpoint,
    drop_detached,
    list_checkpoints,
    load_newest_checkpoint,
    save_checkpoint,
)
from shoal.run.metrics import MetricsLogger
from shoal.run.progress import ProgressLine
from shoal.run.resolve import ResolvedConfig

if TYPE_CHECKING:
    from shoal.run.runner import Run


def evaluate_engine(builder: Any, net: Any, simulations: int, games: int, baseline_simulations: int, seed: int,
                    opponents: list[str] | None = None) -> dict[str, Any]:
    """The engine's (``simulations`` per move) scores against the baselines, ``games`` games each."""
    from shoal.agents.alphazero.arena import baselines, measure, primary_baseline

    name = game_name(builder.game_id)
    opps = baselines(name, baseline_simulations, seed)
    if opponents is not None:
        opps = {k: v for k, v in opps.items() if k in opponents}
    player = builder.make_player(net, simulations)
    results = measure(builder.new_game, player, opps, games)
    main = primary_baseline(name, results)
    return {"engine_simulations": simulations, "baselines": results, "primary": main,
            "mean_return": results[main]["score"], "std_return": 0.0, "episodes": games,
            "leaves_per_network_call": player.leaf_evaluations / max(player.network_calls, 1)}


def train_game(resolved: ResolvedConfig, run_dir: Path | None, resuming: bool, quiet: bool, tensorboard: bool) -> Run:
    """Train AlphaZero as ``resolved`` says, in ``run_dir``; returns the finished run."""
    from shoal.run.runner import Run, _versions, default_run_dir
    from shoal.topologies import get_topology
    from shoal.topologies.alphazero import GameContext

    run, cfg = resolved.run, resolved.agent
    if run.topology != "alphazero":
        raise ConfigError(f"alphazero runs on the alphazero topology, not {run.topology!r}; drop --topology")
    if getattr(run, "num_learners", 1) != 1:
        raise ConfigError(f"alphazero has one learner, got num_learners={run.num_learners}; drop --num-learners")
    if run.device != "cpu":
        raise ConfigError(f"alphazero trains on the CPU only, got device={run.device!r}; drop the setting or pass device=cpu")
    from shoal.config import to_dict

    ctx = GameContext(to_dict(cfg), resolved.env_id, run.seed, run.torch_threads, on_nonfinite=run.on_nonfinite)
    ctx.builder()  # a ConfigError for an env that is not a game, before anything is written
    run_dir = Path(run_dir) if run_dir else default_run_dir(resolved.algo, resolved.env_id, run.seed)
    created = False
    if not resuming:
        if (run_dir / "config.yaml").exists():
            raise ConfigError(f"run directory {str(run_dir)!r} already holds a run; "
                              f"continue it with --resume {run_dir} or choose another --run-dir")
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved.to_yaml_dict(), sort_keys=False))
    if not quiet:
        for note in resolved.notes:
            print(note, flush=True)
    set_threads(run.torch_threads)
    backend = make_backend(run.backend, run.ray_address or None, num_cpus=None if run.ray_address else run.num_actors + 3)
    try:
        program = get_topology("alphazero")(ctx, run, backend, resolved.topology)
    except BaseException:
        backend.shutdown()
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    try:
        return _loop(resolved, ctx, program, run_dir, resuming, quiet, tensorboard, Run, _versions())
    except BaseException:
        if created and not list_checkpoints(run_dir / "checkpoints"):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _loop(resolved: ResolvedConfig, ctx: Any, program: Any, run_dir: Path, resuming: bool, quiet: bool, tensorboard: bool,
          run_cls: Any, versions: dict[str, str]) -> Any:
    run, cfg = resolved.run, resolved.agent
    builder = ctx.builder()
    ckpt_dir = run_dir / "checkpoints"
    eval_seed = derive_seed(run.seed, "eval")
    meta = {"versions": versions, "seed": run.seed, "eval_seed": eval_seed, "topology": "alphazero",
            "actor_seeds": program.actor_seeds, "engine_simulations": cfg.engine_simulations, "command": " ".join(sys.argv)}
    env_steps, games, wall_offset = 0, 0, 0.0
    try:
        if resuming:
            if not list_checkpoints(ckpt_dir):
                raise CheckpointError(f"no checkpoint in {ckpt_dir}; start the run again without --resume")
            newest, tree, _ = load_newest_checkpoint(ckpt_dir, quarantine=True)
            try:
                program.load_state(tree["program"])
            except (KeyError, RuntimeError, ValueError) as e:
                raise CheckpointError(f"checkpoint {newest.name} does not fit the run's settings ({type(e).__name__}); "
                                      "resume without changing network or replay settings, or start a new run") from None
            atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved.to_yaml_dict(), sort_keys=False))
            r = tree["runner"]
            env_steps, games, wall_offset = int(r["env_steps"]), int(r["games"]), float(r["wall_time_s"])
        atomic_write_text(run_dir / "run.json", json.dumps(meta, indent=2))
        logger = MetricsLogger(run_dir, resume=resuming, tensorboard=tensorboard)
        if resuming:
            logger.truncate_after(env_steps)
        start = time.perf_counter()
        if not resuming and (cfg.pretrain_games or cfg.pretrain_dataset):
            from shoal.agents.alphazero.pretrain import baseline_games, policy_dataset, read_games

            dataset = (read_games(cfg.pretrain_dataset) if cfg.pretrain_dataset else
                       baseline_games(builder.new_game, cfg.pretrain_games, cfg.pretrain_simulations, derive_seed(run.seed, "pretrain")))
            m = program.backend.get(program.learner.call("pretrain", policy_dataset(builder.new_game, dataset, cfg.augment),
                                                         derive_seed(run.seed, "pretrain-order")))
            logger.log({"env_steps": 0, "wall_time_s": round(time.perf_counter() - start, 4), **m})
        every = run.checkpoint_every or max(1, run.steps // 10)
        next_ckpt = (env_steps // every + 1) * every
        log_every = run.log_every or max(1, run.steps // 200)
        next_log = env_steps
        next_eval = (env_steps // run.eval_every + 1) * run.eval_every if run.eval_every else None
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        outcomes: list[float] = []
        lengths: list[int] = []
        window_steps, window_start = 0, time.perf_counter()
        history: list[dict[str, float]] = []
        last_eval: dict[str, Any] | None = None
        progress = ProgressLine(run.steps, f"alphazero {resolved.env_id}", disable=quiet)

        def now_s() -> float:
            return round(wall_offset + time.perf_counter() - start, 4)

        def run_eval() -> dict[str, Any]:
            res = evaluate_engine(builder, program.network(), cfg.engine_simulations, cfg.eval_games,
                                  cfg.baseline_simulations, eval_seed)
            res["env_steps"] = env_steps
            return res

        def save(step: int) -> None:
            tree = {"program": program.state(), "runner": {"env_steps": env_steps, "games": games,
                                                           "wall_time_s": wall_offset + time.perf_counter() - start}}
            save_checkpoint(ckpt_dir / f"ckpt-{step:012d}", tree, meta={"env_steps": step, "algo": "alphazero",
                                                                        "env": resolved.env_id})
            ckpts = list_checkpoints(ckpt_dir)
            for old in ckpts[:-run.keep_checkpoints]:
                delete_checkpoint(old)
            for old in ckpts[-run.keep_checkpoints:-1]:
                drop_detached(old)

        try:
            with progress:
                while env_steps < run.steps:
                    rep = program.run_iteration()
                    env_steps += rep.env_steps
                    window_steps += rep.env_steps
                    games += len(rep.episode_returns)
                    outcomes = (outcomes + rep.episode_returns)[-100:]
                    lengths = (lengths + rep.episode_lengths)[-100:]
                    for k, v in rep.metrics.items():
                        sums[k] = sums.get(k, 0.0) + v
                        counts[k] = counts.get(k, 0) + 1
                    if env_steps >= next_log or env_steps >= run.steps:
                        t = time.perf_counter()
                        row = {"env_steps": env_steps, "wall_time_s": now_s(),
                               "episode_return_mean": sum(outcomes) / len(outcomes) if outcomes else float("nan"),
                               "episode_length_mean": sum(lengths) / len(lengths) if lengths else float("nan"),
                               "episodes": games, "sps": window_steps / max(t - window_start, 1e-9),
                               **{k: v / counts[k] for k, v in sums.items()}}
                        logger.log(row)
                        history.append(row)
                        progress.update(env_steps, row)
                        next_log = (env_steps // log_every + 1) * log_every
                        sums, counts, window_steps, window_start = {}, {}, 0, t
                    if next_eval is not None and env_steps >= next_eval:
                        next_eval = (env_steps // run.eval_every + 1) * run.eval_every
                        last_eval = run_eval()
                        erow = {"env_steps": env_steps, "wall_time_s": now_s(), "eval_return_mean": last_eval["mean_return"],
                                **{f"eval_score_{k}": v["score"] for k, v in last_eval["baselines"].items()}}
                        logger.log(erow)
                        history.append(erow)
                        if run.target_return is not None and last_eval["mean_return"] >= run.target_return:
                            break
                    if env_steps >= next_ckpt and env_steps < run.steps:
                        save(env_steps)
                        next_ckpt = (env_steps // every + 1) * every
                save(env_steps)
            result = None
            if run.eval_episodes > 0 and cfg.eval_games > 0:
                result = last_eval if last_eval is not None and last_eval["env_steps"] == env_steps else run_eval()
                atomic_write_text(run_dir / "eval.json", json.dumps(result, indent=2))
            return run_cls(run_dir, resolved, env_steps, result, wall_offset + time.perf_counter() - start, history)
        finally:
            logger.close()
    finally:
        program.close()


def is_game_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds an alphazero run."""
    cfg = Path(run_dir) / "config.yaml"
    return cfg.exists() and load_yaml_file(cfg).get("algo") == "alphazero"


def evaluate_game_run(run_dir: Path, games: int, seed: int | None = None) -> dict[str, Any]:
    """The engine of a run's newest checkpoint (at its recorded search size) against the baselines, ``games`` each."""
    builder, net, doc, meta = _load_engine(run_dir)
    agent = builder.config
    res = evaluate_engine(builder, net, agent.engine_simulations, games, agent.baseline_simulations,
                          derive_seed(int(doc["run"]["seed"]), "eval") if seed is None else seed)
    res["env_steps"] = int(meta.get("env_steps", 0))
    return res


def load_engine_network(run_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """``(builder, network, config)`` of a trained run's newest checkpoint (the network self-play used last)."""
    builder, net, doc, _ = _load_engine(run_dir)
    return builder, net, doc


def _load_engine(run_dir: Path) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """As :func:`load_engine_network`, plus the checkpoint's metadata (from the same checkpoint read)."""
    from shoal.config import build
    from shoal.topologies.alphazero import GameContext

    cfg_path = Path(run_dir) / "config.yaml"
    if not cfg_path.exists():
        raise CheckpointError(f"{str(run_dir)!r} holds no run (no config.yaml); pass the --run-dir of an alphazero run")
    doc = load_yaml_file(cfg_path)
    if doc.get("algo") != "alphazero":
        raise ConfigError(f"{run_dir} holds a {doc.get('algo')!r} run; `shoal play` needs an alphazero run")
    from shoal.agents.alphazero.config import AlphaZeroConfig

    build(AlphaZeroConfig, doc["agent"])
    ctx = GameContext(doc["agent"], doc["env"], int(doc["run"]["seed"]))
    net = ctx.initial_network()
    if not list_checkpoints(Path(run_dir) / "checkpoints"):
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}; train the run first")
    _, tree, meta = load_newest_checkpoint(Path(run_dir) / "checkpoints", detached=False)
    learner = tree["program"]["learner"]
    gated = bool(doc["agent"].get("gate"))
    net.load_state_dict(learner["best"] if gated else learner["net"])
    return ctx.builder(), net, doc, meta
