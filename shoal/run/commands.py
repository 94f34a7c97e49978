"""The ``shoal tune`` and ``shoal report`` commands, and ``shoal train --seeds`` / ``shoal plot EXPERIMENT``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from shoal.errors import ConfigError


def add_parsers(sub: Any) -> None:
    """Add ``tune``, ``report`` and ``record`` to the ``shoal`` command's subparsers."""
    t = sub.add_parser("tune", help="search hyperparameters with Optuna; writes the best settings as a YAML")
    t.add_argument("algo", help="algorithm name (see `shoal list`)")
    t.add_argument("--env", required=True, help="Gymnasium env id, e.g. CartPole-v1")
    t.add_argument("--trials", type=int, required=True, help="trials to run now (added to the study's earlier ones)")
    t.add_argument("--steps", type=int, help="env steps per trial (default: the per-env default)")
    t.add_argument("--storage", help="Optuna database URL, e.g. sqlite:///study.db (default: study.db in the study folder); "
                   "the same storage and study name again continue the study")
    t.add_argument("--study-name", help="study name (default ALGO_ENV)")
    t.add_argument("--dir", help="study folder, holding a run directory per trial (default runs/tune/STUDY_NAME)")
    t.add_argument("--space", help="YAML file of search spaces (default shoal/configs/search_spaces.yaml)")
    t.add_argument("--out", help="where to write the best settings (default STUDY_FOLDER/best.yaml)")
    t.add_argument("--backend", choices=["inprocess", "ray"], default="inprocess",
                   help="inprocess: trials one after another (default); ray: trials in parallel as Ray tasks")
    t.add_argument("--parallel", type=int, help="with --backend ray: trials at a time (default: one per core)")
    t.add_argument("--ray-address", help="with --backend ray: connect to this cluster (the storage must be reachable from it)")
    t.add_argument("--seed", type=int, default=0, help="run seed of every trial, and the sampler's seed (default 0)")
    t.add_argument("--evals", type=int, default=5, help="evaluations per trial that the pruner sees (default 5)")
    t.add_argument("--pruner", choices=["median", "none"], default="median", help="median (default) or none")
    t.add_argument("--startup-trials", type=int, default=5,
                   help="random trials before TPE samples, and finished trials before pruning starts (default 5)")
    t.add_argument("--warmup-evals", type=int, default=1, help="evaluations of a trial before it may be pruned (default 1)")
    t.add_argument("--config", help="YAML file of settings every trial shares")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="settings every trial shares, e.g. eval_episodes=10")

    r = sub.add_parser("report", help="final-return table of multi-seed experiments (mean, median, IQM, bootstrap CIs)")
    r.add_argument("experiments", nargs="+", help="experiment folders written by `shoal train ... --seeds`")
    r.add_argument("--json", action="store_true", help="print the table as JSON")
    r.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    r.add_argument("--ci", type=float, default=0.95, help="confidence level (default 0.95)")
    r.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")

    rec = sub.add_parser("record", help="play a trained run's greedy policy and write the episodes as a Minari dataset")
    rec.add_argument("run_dir", help="directory of a run written by `shoal train`")
    rec.add_argument("--episodes", type=int, required=True, help="episodes to record")
    rec.add_argument("--out", required=True, help="dataset id (e.g. shoal/cartpole-eps0.3-v0, stored under "
                     "MINARI_DATASETS_PATH or ~/.minari/datasets) or a folder to write the dataset into")
    rec.add_argument("--epsilon", type=float, default=0.0, help="discrete actions: probability of a uniformly random "
                     "action instead of the greedy one (default 0)")
    rec.add_argument("--action-noise", type=float, default=0.0, help="continuous actions: std of Gaussian noise added "
                     "to the greedy action, in actions rescaled to [-1, 1]; clipped to the bounds (default 0)")
    rec.add_argument("--seed", type=int, default=0, help="episode i resets with seed+i; also seeds the noise (default 0)")


def cmd_tune(a: argparse.Namespace) -> int:
    """``shoal tune``: run the trials, print each, write the best YAML."""
    from shoal.config import parse_overrides
    from shoal.run.tune import study_summary, tune

    if a.parallel is not None and a.backend != "ray":
        raise ConfigError("--parallel applies to --backend ray (in-process trials run one after another); add --backend ray")
    result = tune(a.algo, a.env, a.trials, steps=a.steps, storage=a.storage, study_name=a.study_name, study_dir=a.dir,
                  space=a.space, out=a.out, seed=a.seed, evals=a.evals, prune=a.pruner == "median",
                  startup_trials=a.startup_trials, warmup_evals=a.warmup_evals, config=a.config,
                  overrides=parse_overrides(a.overrides), jobs=a.backend, parallel=a.parallel, ray_address=a.ray_address,
                  report=lambda line: print(line, flush=True))
    print(study_summary(result))
    return 0


def cmd_train_seeds(a: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """``shoal train ALGO --env ID --seeds ...``: an experiment; non-zero exit if any seed failed."""
    from shoal.run.experiments import failed_seeds, run_experiment

    if a.resume or a.run_dir or a.seed is not None:
        raise ConfigError("--seeds runs one directory per seed in --experiment DIR; drop --seed, --run-dir and --resume")
    if a.config and (not a.algo or not a.env):
        from shoal.config import load_yaml_file

        named = load_yaml_file(a.config)  # e.g. a best.yaml of `shoal tune`, which names both
        a.algo, a.env = a.algo or named.get("algo"), a.env or named.get("env")
    if not a.algo or not a.env:
        raise ConfigError("--seeds needs an algorithm and --env, e.g. shoal train ppo --env CartPole-v1 --seeds 0 1 2")
    # --backend ray places the seeds on Ray (a task each); each seed's own run is then in-process.
    jobs = "ray" if a.backend == "ray" else "process"
    manifest = run_experiment(a.algo, a.env, a.seeds, a.experiment, jobs=jobs, parallel=a.parallel,
                              ray_address=a.ray_address, report=lambda line: print(line, flush=True),
                              steps=a.steps, backend=None if a.backend == "ray" else a.backend, num_actors=a.num_actors,
                              num_learners=a.num_learners, topology=a.topology, config=a.config, overrides=overrides)
    failed = failed_seeds(manifest)
    if failed:
        print(f"shoal: error: {len(failed)} of {len(a.seeds)} seeds failed ({' '.join(map(str, failed))}); the others' "
              f"runs are in {manifest['dir']}, errors in {manifest['dir']}/experiment.json", flush=True)
        return 1
    print(f"experiment directory: {manifest['dir']}  (plot: shoal plot {manifest['dir']}; table: shoal report {manifest['dir']})")
    return 0


def cmd_plot(a: argparse.Namespace) -> int | None:
    """``shoal plot`` with experiment folders among its paths (None: there are none, plot runs as before)."""
    from shoal.run.experiments import is_experiment

    paths = [Path(d) for d in a.run_dirs]
    if not any(is_experiment(p) for p in paths):
        return None
    from shoal.run.experiment_plots import plot_experiments

    out = plot_experiments(paths, Path(a.out), a.x, a.y, a.title, a.ymin, a.ymax)
    print(f"wrote {out}")
    return 0


def cmd_record(a: argparse.Namespace) -> int:
    """``shoal record``: write the dataset, print where and what."""
    import numpy as np

    from shoal.run.record import record_dataset

    rec = record_dataset(a.run_dir, a.episodes, a.out, a.epsilon, a.action_noise, a.seed)
    print(f"wrote {rec.path} (dataset {rec.dataset_id}): {rec.episodes} episodes, {rec.steps:,} steps, "
          f"mean return {np.mean(rec.returns):.2f}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    """``shoal report``: the final-return table, as text or JSON."""
    from shoal.run.stats import experiment_report, format_report

    if a.reps < 100 or not 0 < a.ci < 1:
        raise ConfigError(f"--reps must be >= 100 and --ci in (0, 1), got {a.reps} and {a.ci}")
    table = experiment_report(a.experiments, reps=a.reps, ci=a.ci, seed=a.seed)
    print(json.dumps(table, indent=2) if a.json else format_report(table, a.ci))
    return 0
