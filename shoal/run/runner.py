"""The experiment runner: a run directory, the training loop, checkpoints and evaluation."""

from __future__ import annotations

import contextlib
import json
import platform
import shutil
import subprocess
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from shoal.backends import make_backend
from shoal.core.seeding import derive_seed
from shoal.core.threads import set_threads
from shoal.envs.ids import bare_env_id, env_module_source
from shoal.envs.make import check_env_id, env_id_of, env_spec
from shoal.errors import CheckpointError, ConfigError, ShoalWarning
from shoal.io.checkpoint import (
    atomic_write_text,
    delete_checkpoint,
    detached_dropped,
    drop_detached,
    list_checkpoints,
    load_newest_checkpoint,
    save_checkpoint,
)
from shoal.run.evaluate import evaluate, evaluation_env_id
from shoal.run.metrics import MetricsLogger
from shoal.run.progress import ProgressLine
from shoal.run.resolve import ResolvedConfig, resolve
from shoal.run.tracking import make_tracker
from shoal.run.video import check_video_env, record_video
from shoal.topologies import get_topology, misfit, multi_learner
from shoal.topologies.nodes import NodeContext


@dataclass
class Run:
    """A finished (or resumed and finished) training run."""

    run_dir: Path
    config: ResolvedConfig
    env_steps: int
    eval: dict[str, Any] | None = None
    wall_time_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("shoal", "torch", "gymnasium", "numpy", "ray"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                           cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = "unknown"
    return out


def default_run_dir(algo: str, env_id: str, seed: int) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{algo}_{bare_env_id(env_id).replace('/', '-')}_s{seed}_{stamp}"


def train(algo: str | None = None, env: Any = None, *, steps: int | None = None, seed: int | None = None,
          run_dir: str | Path | None = None, backend: str | None = None, num_actors: int | None = None,
          num_learners: int | None = None,
          topology: str | None = None, config: str | Path | None = None, overrides: dict[str, Any] | None = None,
          resume: str | Path | None = None,
          ray_address: str | None = None, quiet: bool = True, tensorboard: bool = True,
          on_eval: Callable[[int, float], bool] | None = None) -> Run:
    """Train ``algo`` on ``env`` and evaluate it; everything lands in a run directory.

    ``overrides`` are ``key: value`` pairs for run or algorithm settings. With
    ``resume=DIR`` the run in DIR continues from its last checkpoint, with its own settings
    except those given again (``steps``, ``lr``, ...; the ones that shape the checkpointed
    state, listed in :data:`shoal.run.resolve.FIXED_ON_RESUME`, are refused). ``env`` may be
    a Gymnasium id, ``"module:EnvId"`` (the module is imported first, in every process) or a
    callable. Unless ``quiet``, one line says which per-env defaults were applied. A ``config``
    file's ``algo:`` and ``env:`` keys stand in for ``algo`` and ``env`` when those are not given.
    ``on_eval(env_steps, mean_return)`` is called after each periodic evaluation (``eval_every``);
    returning True ends the run there as if its budget were spent (checkpoint, final evaluation).
    """
    overrides = dict(overrides or {})
    cli_run = {"steps": steps, "seed": seed, "backend": backend, "num_actors": num_actors, "num_learners": num_learners,
               "ray_address": ray_address,
               "topology": topology}
    base = None
    if resume is not None:
        rdir = Path(resume)
        cfg_path = rdir / "config.yaml"
        if not cfg_path.exists():
            raise CheckpointError(f"cannot resume {str(rdir)!r}: it has no config.yaml; pass the directory of an earlier run")
        from shoal.config import load_yaml_file

        base = load_yaml_file(cfg_path)
        if algo and algo != base["algo"]:
            raise ConfigError(f"--resume {rdir} holds a {base['algo']!r} run, not {algo!r}; drop the algorithm or pick another directory")
        if env is not None and env_id_of(env) != base["env"]:
            raise ConfigError(f"--resume {rdir} trains on {base['env']!r}, not {env_id_of(env)!r}; drop --env or pick another directory")
        if not list_checkpoints(rdir / "checkpoints"):
            raise CheckpointError(f"no checkpoint in {rdir / 'checkpoints'}; the run ended before its first checkpoint, "
                                  "start it again without --resume")
        algo = base["algo"]
        env = base["env"] if env is None else env  # a factory (Python API) is passed again; an id is read back
        run_dir = rdir
    if config is not None and resume is None and (not algo or env is None):
        from shoal.config import load_yaml_file

        named = load_yaml_file(config)  # e.g. the best.yaml of `shoal tune`, which names both
        algo = algo or named.get("algo")
        env = named.get("env") if env is None else env
    if not algo:
        raise ConfigError("no algorithm given; e.g. shoal train ppo --env CartPole-v1")
    if env is None:
        raise ConfigError("no environment given; pass --env ID, e.g. --env CartPole-v1")
    env_id = env_id_of(env)
    if algo == "alphazero":  # board games, not Gymnasium envs: its own loop with the same run directory
        from shoal.run.alphazero import train_game

        if topology and topology != "alphazero":
            raise ConfigError(f"alphazero runs on the alphazero topology, not {topology!r}; drop --topology")
        return train_game(resolve(algo, env, env_id, config, overrides, cli_run, base), Path(run_dir) if run_dir else None,
                          resume is not None, quiet, tensorboard)
    if isinstance(env, str):
        check_env_id(env)
    resolved = resolve(algo, env, env_id, config, overrides, cli_run, base)
    run = resolved.run
    spec = env_spec(env)
    if not quiet:
        for note in resolved.notes:
            print(note, flush=True)

    run_dir = Path(run_dir) if run_dir else default_run_dir(algo, env_id, run.seed)
    created = False
    if resume is None:
        _refuse_existing_run(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        try:  # one atomic mkdir: of two trainers starting in one new directory, only one created it
            run_dir.mkdir()
            created = True
        except FileExistsError:
            pass
    ckpt_dir = run_dir / "checkpoints"

    try:
        with _run_dir_lock(run_dir):
            if resume is None:  # checked again under the lock: another trainer may have started here meanwhile
                _refuse_existing_run(run_dir)
                atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved.to_yaml_dict(), sort_keys=False))
            return _train(resolved, spec, run_dir, ckpt_dir, resume is not None, quiet, tensorboard, on_eval)
    except BaseException:
        # Leave nothing that --resume would trip on: a run that never checkpointed is removed.
        if created and not list_checkpoints(ckpt_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _train(resolved: ResolvedConfig, spec: Any, run_dir: Path, ckpt_dir: Path, resuming: bool,
           quiet: bool, tensorboard: bool, on_eval: Callable[[int, float], bool] | None = None) -> Run:
    run = resolved.run
    set_threads(run.torch_threads)
    # A ``module:EnvId`` env whose module is local code travels to Ray workers with them.
    source = env_module_source(resolved.env) if isinstance(resolved.env, str) else None
    # A private Ray instance gets logical CPUs for every node a topology places (actors, a learner, a
    # predictor or parameter node; queue, replay and variable servers ask for none), not one per core.
    backend = make_backend(run.backend, run.ray_address or None,
                           num_cpus=None if run.ray_address else run.num_actors + run.num_learners + 3,
                           py_modules=[source] if source else [])
    try:
        # The backend resolves the device: on Ray, "auto" and "cuda" are about the cluster, not this driver.
        device = backend.resolve_device(run.device)
        inference_device = backend.resolve_device(run.inference_device) if run.inference_device else device
    except BaseException:
        backend.shutdown()
        raise
    ctx = NodeContext(resolved.algo, _plain(resolved.agent), resolved.env, spec, run.steps, run.seed,
                      run.torch_threads, device, run.vector, max_restarts=run.max_restarts,
                      inference_device=inference_device, env_step_timeout=run.env_step_timeout,
                      on_nonfinite=run.on_nonfinite)
    topology = run.topology
    try:
        reason = misfit(topology, ctx.builder())
        if reason:
            raise ConfigError(f"{resolved.algo} does not fit the {topology} topology: {reason}")
        if run.num_learners > 1 and not multi_learner(topology):
            raise ConfigError(f"the {topology} topology runs one learner, got num_learners={run.num_learners}; "
                              "use num_learners=1 or a topology with learner groups (local, impala)")
        one_learner = ctx.builder().single_learner if run.num_learners > 1 else None
        if one_learner:
            raise ConfigError(f"{resolved.algo} cannot train with num_learners={run.num_learners}: {one_learner}")
        program = get_topology(topology)(ctx, run, backend, resolved.topology)
    except BaseException:
        backend.shutdown()
        raise
    eval_seed = derive_seed(run.seed, "eval")
    meta = {"versions": _versions(), "seed": run.seed, "eval_seed": eval_seed, "topology": topology,
            "env_seeds": getattr(program, "env_seeds", []), "actor_seeds": getattr(program, "actor_seeds", []),
            "command": " ".join(sys.argv)}
    env_steps, episodes, wall_offset = 0, 0, 0.0
    recent: deque[float] = deque(maxlen=100)
    recent_len: deque[int] = deque(maxlen=100)
    if resuming:
        if not list_checkpoints(ckpt_dir):
            raise CheckpointError(f"no checkpoint in {ckpt_dir}; the run ended before its first checkpoint, "
                                  "start it again without --resume")
        try:
            _clear_unfinished_writes(ckpt_dir)
            newest, tree, _ = load_newest_checkpoint(ckpt_dir, quarantine=True)
        except BaseException:
            program.close()
            raise
        if detached_dropped(newest):
            warnings.warn(f"checkpoint {newest.name} holds no replay (only the newest checkpoint keeps it), so the "
                          "run continues with empty replay tables that refill as the actors run", ShoalWarning, stacklevel=2)
        try:
            program.load_state(tree["program"])
        except (KeyError, RuntimeError, ValueError, IndexError) as e:
            # FIXED_ON_RESUME refuses the known culprits; this catches any other setting that reshaped the state.
            program.close()
            raise CheckpointError(f"checkpoint {newest.name} does not fit the run's settings ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200] if str(e) else 'mismatch'}); resume without changing "
                                  "settings that shape the networks or buffers, or start a new run") from None
        if resolved.to_yaml_dict() != yaml.safe_load((run_dir / "config.yaml").read_text()):
            # The checkpoint fits: a resume that changed settings (more steps, another lr) records them.
            atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved.to_yaml_dict(), sort_keys=False))
        r = tree["runner"]
        env_steps, episodes, wall_offset = int(r["env_steps"]), int(r["episodes"]), float(r["wall_time_s"])
        recent.extend(r["recent_returns"])
        recent_len.extend(r["recent_lengths"])
    atomic_write_text(run_dir / "run.json", json.dumps(meta, indent=2))
    eval_env = run.eval_env or (evaluation_env_id(resolved.env_id) if isinstance(resolved.env, str) else resolved.env)
    try:
        if run.capture_video:
            check_video_env(eval_env)  # fail now, not after training (and before a tracker run is started)
        tracker = make_tracker(run.track, run_dir, resolved.to_yaml_dict(), run.wandb_project, run.wandb_entity, resuming)
    except BaseException:
        program.close()
        raise
    logger = MetricsLogger(run_dir, resume=resuming, tensorboard=tensorboard, trackers=[tracker] if tracker else [])
    if resuming:
        logger.truncate_after(env_steps)
    every = run.checkpoint_every or max(1, run.steps // 10)
    next_ckpt = (env_steps // every + 1) * every
    log_every = run.log_every or max(1, run.steps // 200)
    next_log = env_steps
    metric_sums: dict[str, float] = {}
    metric_counts: dict[str, int] = {}  # per key: a program may report a metric in some iterations only
    window_steps, window_start = 0, time.perf_counter()
    bounds = None if spec.discrete else (spec.action_low, spec.action_high)
    next_eval = (env_steps // run.eval_every + 1) * run.eval_every if run.eval_every else None
    last_eval: dict[str, Any] | None = None
    video_every = run.video_every if run.capture_video else 0
    next_video = (env_steps // video_every + 1) * video_every if video_every else None
    last_video = -1

    def record(step: int) -> None:
        nonlocal last_video
        last_video = step
        try:
            video = record_video(program.eval_policy(), eval_env, run_dir / "videos" / f"step-{step:012d}.mp4", 1,
                                 eval_seed, run.video_max_frames, bounds, keep_frames=True)
        except Exception as e:  # a video is a by-product: training and its evaluation go on without it
            text = str(e).strip()
            why = f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__
            warnings.warn(f"could not record the video at step {step} ({why}); training goes on without it",
                          ShoalWarning, stacklevel=2)
            return
        logger.log_video(step, "eval/video", video.path, video.fps, video.images)

    def run_eval() -> dict[str, Any]:
        res = evaluate(program.eval_policy(), eval_env, run.eval_episodes or 20, eval_seed, bounds, run.eval_max_steps)
        res["env_steps"] = env_steps
        return res

    progress = ProgressLine(run.steps, f"{resolved.algo} {resolved.env_id}", disable=quiet)
    history: list[dict[str, float]] = []
    start = time.perf_counter()

    checkpoint_failures = 0

    def save(step: int) -> None:
        tree = {"program": program.state(),
                "runner": {"env_steps": env_steps, "episodes": episodes, "wall_time_s": wall_offset + time.perf_counter() - start,
                           "recent_returns": list(recent), "recent_lengths": list(recent_len)}}
        name = f"ckpt-{step:012d}"
        try:
            save_checkpoint(ckpt_dir / name, tree, meta={"env_steps": step, "algo": resolved.algo, "env": resolved.env_id})
        except OSError as e:
            why = e.strerror or type(e).__name__
            if run.on_checkpoint_error == "stop":
                earlier = list_checkpoints(ckpt_dir)
                kept = (f"{earlier[-1].name} is intact: free space and continue with `shoal train --resume {run_dir}`"
                        if earlier else "no earlier checkpoint exists: free space and start the run again")
                raise CheckpointError(f"could not write checkpoint {name} in {ckpt_dir} ({why}); {kept}") from None
            warnings.warn(f"could not write checkpoint {name} ({why}); training goes on and tries again at the next "
                          "checkpoint (on_checkpoint_error=continue)", ShoalWarning, stacklevel=2)
            nonlocal checkpoint_failures
            checkpoint_failures += 1
            return
        try:  # pruning is housekeeping: on a full disk or beside a damaged older checkpoint, it waits for the next save
            ckpts = list_checkpoints(ckpt_dir)
            for old in ckpts[:-run.keep_checkpoints]:
                delete_checkpoint(old)
            for old in ckpts[-run.keep_checkpoints:-1]:  # replay is large: only the newest checkpoint keeps it
                drop_detached(old)
        except (OSError, CheckpointError) as e:
            warnings.warn(f"could not prune older checkpoints in {ckpt_dir} ({e}); they stay until the next checkpoint",
                          ShoalWarning, stacklevel=2)

    failed = False
    try:
        with progress:
            while env_steps < run.steps:
                rep = program.run_iteration()
                env_steps += rep.env_steps
                window_steps += rep.env_steps
                episodes += len(rep.episode_returns)
                recent.extend(rep.episode_returns)
                recent_len.extend(rep.episode_lengths)
                for k, v in rep.metrics.items():
                    metric_sums[k] = metric_sums.get(k, 0.0) + v
                    metric_counts[k] = metric_counts.get(k, 0) + 1
                if env_steps >= next_log or env_steps >= run.steps:
                    now = time.perf_counter()
                    row = {"env_steps": env_steps, "wall_time_s": round(wall_offset + now - start, 4),
                           "episode_return_mean": sum(recent) / len(recent) if recent else float("nan"),
                           "episode_length_mean": sum(recent_len) / len(recent_len) if recent_len else float("nan"),
                           "episodes": episodes, "sps": window_steps / max(now - window_start, 1e-9),
                           **{k: v / metric_counts[k] for k, v in metric_sums.items()}}
                    if run.on_checkpoint_error == "continue":  # a column from the first row: widening the
                        row["checkpoint_failures"] = checkpoint_failures  # CSV later would need disk space
                    logger.log(row)
                    history.append(row)
                    progress.update(env_steps, row)
                    next_log = (env_steps // log_every + 1) * log_every
                    metric_sums, metric_counts = {}, {}
                    window_steps, window_start = 0, now
                if next_eval is not None and env_steps >= next_eval:
                    next_eval = (env_steps // run.eval_every + 1) * run.eval_every
                    last_eval = run_eval()
                    erow = {"env_steps": env_steps, "wall_time_s": round(wall_offset + time.perf_counter() - start, 4),
                            "eval_return_mean": last_eval["mean_return"]}
                    logger.log(erow)
                    history.append(erow)
                    if run.target_return is not None and last_eval["mean_return"] >= run.target_return:
                        break
                    if on_eval is not None and on_eval(env_steps, float(last_eval["mean_return"])):
                        break
                if next_video is not None and env_steps >= next_video:
                    next_video = (env_steps // video_every + 1) * video_every
                    record(env_steps)
                if env_steps >= next_ckpt and env_steps < run.steps:
                    save(env_steps)
                    next_ckpt = (env_steps // every + 1) * every
            if not (ckpt_dir / f"ckpt-{env_steps:012d}.json").exists():  # a resumed finished run: it is the one loaded
                save(env_steps)
            if run.capture_video and last_video != env_steps:
                record(env_steps)  # the final policy's
        result = None
        if run.eval_episodes > 0:
            # The policy has not changed since an evaluation at this very step: reuse it.
            result = last_eval if last_eval is not None and last_eval["env_steps"] == env_steps else run_eval()
            atomic_write_text(run_dir / "eval.json", json.dumps(result, indent=2))
        return Run(run_dir, resolved, env_steps, result, wall_offset + time.perf_counter() - start, history)
    except BaseException:
        failed = True
        raise
    finally:
        try:
            logger.close(failed=failed)  # finishes the tracker run (marked failed if training raised), which may fail
        except Exception as e:
            if not failed:
                raise
            # The run's own error is the one to see; the tracker's would hide it.
            warnings.warn(f"the tracker could not finish its run ({type(e).__name__}: {e})", ShoalWarning, stacklevel=2)
        finally:
            program.close()


def _refuse_existing_run(run_dir: Path) -> None:
    if (run_dir / "config.yaml").exists():
        raise ConfigError(f"run directory {str(run_dir)!r} already holds a run; "
                          f"continue it with --resume {run_dir} or choose another --run-dir")


@contextlib.contextmanager
def _run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` while training there: a second trainer (a ``--resume`` while the run is alive) is refused."""
    import fcntl

    try:
        f = open(run_dir / ".lock", "a+")
    except OSError as e:
        raise ConfigError(f"cannot write in the run directory {str(run_dir)!r} ({e.strerror}); check its permissions") from None
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"run directory {str(run_dir)!r} is in use by another shoal process still training there; "
                              "wait for it to end (or stop it) before resuming") from None
        yield
    finally:
        f.close()


def _clear_unfinished_writes(ckpt_dir: Path) -> None:
    """Delete what a process killed inside a checkpoint write left: temp files, and tensor files no JSON names."""
    for stale in ckpt_dir.glob(".ckpt-*.tmp"):
        stale.unlink(missing_ok=True)
    named = {p.with_suffix(".safetensors").name for p in list_checkpoints(ckpt_dir)}
    for weights in ckpt_dir.glob("ckpt-*.safetensors"):
        base = weights.name.replace(".detached.safetensors", ".safetensors")
        if base not in named:
            weights.unlink(missing_ok=True)


def _plain(cfg: Any) -> dict[str, Any]:
    from shoal.config import to_dict

    return to_dict(cfg)
