"""Hyperparameter tuning with Optuna: a seeded TPE sampler, a median pruner, studies kept in a database.

Each trial samples settings from the algorithm's search space (:mod:`shoal.run.search_space`),
trains through the real runner in its own run directory under the study folder, reports every
periodic evaluation's mean return to Optuna (step = the evaluation's index, from 0) and stops early
when the median pruner says so. Its value is the final evaluation's mean return. The study
lives in a database (SQLite by default, in the study folder), so running the same command
again adds trials to it. With ``jobs="ray"`` trials run side by side as Ray tasks, each
opening the study from the database itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from shoal.core.seeding import derive_seed
from shoal.envs.ids import bare_env_id
from shoal.errors import ConfigError, ShoalError
from shoal.io.checkpoint import atomic_write_text
from shoal.run.search_space import Param, decode, load_space, plain, sample

#: Run settings a best.yaml carries over from the best trial (the rest is bookkeeping of the trial:
#: its budget, seed, evaluation and checkpoint schedule).
TRAINING_RUN_KEYS = ("topology", "num_actors", "num_learners", "vector", "torch_threads")


@dataclass(frozen=True)
class TrialJob:
    """Everything one trial needs; picklable, so a Ray task can run it."""

    algo: str
    env: str
    storage: str
    study_name: str
    study_dir: str
    space_file: str | None
    steps: int | None
    seed: int
    sampler_seed: int
    startup_trials: int
    warmup_evals: int
    prune: bool
    config: str | None
    overrides: dict[str, Any]


def _storage(url: str) -> Any:
    import optuna

    # Trials in parallel processes share one SQLite file: wait for its lock rather than fail.
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _study(job: TrialJob) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=job.sampler_seed, n_startup_trials=job.startup_trials)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=job.startup_trials, n_warmup_steps=job.warmup_evals)
              if job.prune else optuna.pruners.NopPruner())
    return optuna.create_study(study_name=job.study_name, storage=_storage(job.storage), sampler=sampler, pruner=pruner,
                               direction="maximize", load_if_exists=True)


def run_trial(job: TrialJob) -> dict[str, Any]:
    """Ask the study for one trial, train it, tell the study how it went; a summary of the trial.

    A trial whose settings the runner refuses (a ConfigError from a sampled combination) or
    whose run raises is recorded as failed with its error, and the study goes on.
    """
    import optuna

    from shoal.run.runner import train

    study = _study(job)
    trial = study.ask()
    run_dir = Path(job.study_dir) / f"trial_{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    summary: dict[str, Any] = {"number": trial.number, "run_dir": str(run_dir)}
    try:
        space = load_space(job.algo, job.space_file)
        params = sample(space, trial)
        summary["params"] = params
        overrides = dict(job.overrides)
        overrides.update(params)
        evals = {"count": 0, "pruned": False}

        def on_eval(env_steps: int, mean_return: float) -> bool:
            trial.report(mean_return, evals["count"])  # step 0 is the first evaluation
            evals["count"] += 1
            evals["pruned"] = job.prune and trial.should_prune()
            return bool(evals["pruned"])  # True ends the run cleanly: checkpoint, metrics, eval.json

        run = train(job.algo, job.env, steps=job.steps, seed=job.seed, run_dir=run_dir, config=job.config,
                    overrides=overrides, quiet=True, tensorboard=False, on_eval=on_eval)
    except Exception as e:  # noqa: BLE001 - one bad trial (a refused combination, a diverged run) never ends the study
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        trial.set_user_attr("error", msg)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return {**summary, "state": "failed", "error": msg}
    except BaseException:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # interrupted: never left RUNNING in the study
        raise
    summary.update(env_steps=run.env_steps, evals=evals["count"])
    if evals["pruned"]:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return {**summary, "state": "pruned"}
    if not run.eval:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return {**summary, "state": "failed", "error": "the run made no final evaluation (eval_episodes=0)"}
    value = float(run.eval["mean_return"])
    study.tell(trial, value)
    return {**summary, "state": "complete", "value": value}


@dataclass
class TuneResult:
    """What a tuning session did and found."""

    study_name: str
    storage: str
    study_dir: Path
    trials: list[dict[str, Any]]
    """This session's trials, in the order they finished."""
    total_trials: int
    best: dict[str, Any]
    """The study's best trial so far (across sessions): number, value, params, run_dir."""
    out: Path


def default_study_name(algo: str, env_id: str) -> str:
    """``ALGO_ENV``: the study a plain ``shoal tune ALGO --env ID`` keeps adding to."""
    return f"{algo}_{bare_env_id(env_id).replace('/', '-')}"


def tune(algo: str, env: str, trials: int, *, steps: int | None = None, storage: str | None = None,
         study_name: str | None = None, study_dir: str | Path | None = None, space: str | Path | None = None,
         out: str | Path | None = None, seed: int = 0, evals: int = 5, prune: bool = True, startup_trials: int = 5,
         warmup_evals: int = 1, config: str | Path | None = None, overrides: dict[str, Any] | None = None,
         jobs: str = "inprocess", parallel: int | None = None, ray_address: str | None = None,
         report: Callable[[str], None] | None = None) -> TuneResult:
    """Run ``trials`` more trials of the study and write the best settings as a YAML ``shoal train --config`` takes.

    ``jobs``: ``inprocess`` (one trial after another in this process) or ``ray`` (trials as Ray
    tasks, at most ``parallel`` at once). ``evals`` periodic evaluations per trial feed the pruner
    (unless ``eval_every`` is among ``overrides``); pruning starts after ``startup_trials``
    finished trials and ``warmup_evals`` evaluations of a trial. The sampler is TPE, random for
    the first ``startup_trials`` trials; trial ``k`` of the study samples with a seed derived
    from ``seed`` and ``k``, so a study is reproducible and a resumed one draws new points.
    """
    import optuna

    from shoal.envs.make import check_env_id
    from shoal.run.resolve import resolve

    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if evals < 1 or startup_trials < 0 or warmup_evals < 0:
        raise ConfigError("--evals must be >= 1 and the pruner's startup trials and warmup evaluations >= 0")
    if jobs not in ("inprocess", "ray"):
        raise ConfigError(f"trials run inprocess (one after another) or on ray, got {jobs!r}")
    check_env_id(env)
    space_params = load_space(algo, space)
    overrides = dict(overrides or {})
    for key in ("seed", "steps"):
        if key in overrides:
            raise ConfigError(f"{key} is set by the tuner; pass --{key} instead of {key}=...")
    # The settings every trial shares must be valid on their own: one error here, not one per trial.
    base = resolve(algo, env, env, config, overrides, {"steps": steps, "seed": seed})
    if "eval_every" not in overrides:
        overrides["eval_every"] = max(1, base.run.steps // evals)
    if base.run.eval_episodes == 0:
        raise ConfigError("trials are scored by their final evaluation; drop eval_episodes=0")

    name = study_name or default_study_name(algo, env)
    folder = Path(study_dir) if study_dir else Path("runs") / "tune" / name
    folder.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=_storage(url), direction="maximize", load_if_exists=True)
    before = len(study.trials)
    say = report or (lambda _line: None)
    say(f"study {name} in {url}: {before} trials so far; running {trials} more "
        f"({'Ray tasks' if jobs == 'ray' else 'one at a time'}), run directories in {folder}")
    job_list = [TrialJob(algo, env, url, name, str(folder), str(space) if space else None, steps, seed,
                         derive_seed(seed, "tune-sampler", before + k), startup_trials, warmup_evals, prune,
                         str(config) if config else None, overrides) for k in range(trials)]
    done: list[dict[str, Any]] = []
    for summary in _run(job_list, jobs, parallel, ray_address):
        done.append(summary)
        say(_trial_line(summary))
    study = optuna.load_study(study_name=name, storage=_storage(url))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        errors = sorted({d.get("error", "") for d in done if d["state"] == "failed"} - {""})
        raise ShoalError(f"no trial of study {name} completed" + (f" (errors: {'; '.join(errors)[:300]})" if errors else "")
                         + "; check the settings and the search space")
    best_trial = max(complete, key=lambda t: float(t.value or 0.0))  # a complete trial always has its value
    best = {"number": best_trial.number, "value": float(best_trial.value or 0.0),
            "params": decode(space_params, best_trial.params), "run_dir": best_trial.user_attrs.get("run_dir", "")}
    out_path = Path(out) if out else folder / "best.yaml"
    write_best(out_path, best, space_params, name, len(study.trials))
    return TuneResult(name, url, folder, done, len(study.trials), best, out_path)


def _run(job_list: list[TrialJob], jobs: str, parallel: int | None, ray_address: str | None) -> Any:
    if jobs == "inprocess":
        for job in job_list:
            yield run_trial(job)
        return
    from shoal.run.parallel import run_jobs

    for _, summary, err in run_jobs(run_trial, [(j,) for j in job_list], backend="ray", max_parallel=parallel,
                                    ray_address=ray_address):
        if err is not None:
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            yield {"number": -1, "state": "failed", "error": msg}
        else:
            yield summary


def _trial_line(s: dict[str, Any]) -> str:
    params = " ".join(f"{k}={_fmt(v)}" for k, v in s.get("params", {}).items())
    head = f"trial {s['number']}" if s["number"] >= 0 else "a trial"
    if s["state"] == "complete":
        return f"{head}: {s['value']:.2f}  {params}"
    if s["state"] == "pruned":
        return f"{head}: pruned after evaluation {s['evals']}  {params}"
    return f"{head}: failed ({s.get('error', '')})  {params}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v).lower() if isinstance(v, bool) else str(v)


def write_best(path: Path, best: dict[str, Any], space: list[Param], study_name: str, total: int) -> None:
    """The best trial's settings as a YAML for ``shoal train --config``: the tuned ones first, then the rest.

    The rest is the trial's resolved config.yaml (algorithm and topology settings, and the run
    settings that shape training), so the file trains exactly the trial's configuration;
    ``--steps`` and ``--seed`` are the new run's own.
    """
    cfg_path = Path(best["run_dir"]) / "config.yaml"
    if not cfg_path.exists():
        raise ShoalError(f"the best trial's run directory {best['run_dir']} has no config.yaml; it was moved or deleted")
    cfg = yaml.safe_load(cfg_path.read_text())
    tuned = {k: plain(v) for k, v in best["params"].items()}
    doc: dict[str, Any] = {"algo": cfg["algo"], "env": cfg["env"], **tuned}
    doc["agent"] = {k: v for k, v in cfg["agent"].items() if k not in tuned}
    doc["run"] = {k: cfg["run"][k] for k in TRAINING_RUN_KEYS if k in cfg["run"] and k not in tuned}
    topo = {k: v for k, v in (cfg.get("topology") or {}).items() if f"topology.{k}" not in tuned}
    if topo:
        doc["topology"] = topo
    header = (f"# Best of {total} trials of study {study_name}: trial {best['number']}, final eval mean return "
              f"{best['value']:.2f} ({best['run_dir']}).\n# Train with: shoal train --config {path}\n"
              f"# Tuned: {', '.join(p.name for p in space)}; the other settings are those the trial ran with.\n")
    atomic_write_text(path, header + yaml.safe_dump(doc, sort_keys=False))


def study_summary(result: TuneResult) -> str:
    """A few lines for the terminal: counts of this session's trials and the best so far."""
    states = [t["state"] for t in result.trials]
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "failed") if states.count(s))
    params = " ".join(f"{k}={_fmt(v)}" for k, v in result.best["params"].items())
    return (f"{len(result.trials)} trials this time ({counts}); {result.total_trials} in the study\n"
            f"best: trial {result.best['number']}, final eval mean return {result.best['value']:.2f}  {params}\n"
            f"wrote {result.out} (train with: shoal train --config {result.out})")
