"""Hyperparameter tuning with Optuna: a seeded TPE sampler, a median pruner, studies kept in a database.

Each trial samples settings from the algorithm's search space (:mod:`shoal.run.search_space`),
trains through the real runner in its own run directory under the study folder, reports every
periodic evaluation's mean return to Optuna at the budget point it was taken at (step =
``env_steps // eval_every``, so every trial is compared at equal budgets) and stops early when
the median pruner says so; the evaluation at the full budget is never pruned. Its value is the
final evaluation's mean return. The study lives in a database (SQLite by default, in the study
folder), so running the same command again adds trials to it; the settings that make trials
comparable (algorithm, env, budget, evaluation schedule, search space) are stored with the study
and a resumed session must match them. Trials are asked for on the driver; with ``jobs="ray"``
they run side by side as Ray tasks, each opening its trial from the database by number.
Running trials record a heartbeat, and a session fails the trials of dead sessions first.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from shoal.core.seeding import derive_seed
from shoal.envs.ids import bare_env_id
from shoal.errors import ConfigError, ShoalError
from shoal.io.checkpoint import atomic_write_text
from shoal.run.search_space import Param, decode, load_space, plain, sample

#: Run settings a best.yaml carries over from the best trial (the rest is bookkeeping of the trial:
#: its budget, seed, evaluation and checkpoint schedule).
TRAINING_RUN_KEYS = ("topology", "num_actors", "num_learners", "vector", "torch_threads")
#: A running trial records a heartbeat this often (seconds); one silent for STALE_AFTER_S is failed.
HEARTBEAT_S = 30
STALE_AFTER_S = 300
#: The study's user attributes that a resumed session must match.
STUDY_KEYS = ("algo", "env", "steps", "evals", "eval_every", "eval_episodes", "space")
STUDY_MARKER = "study.json"


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
    number: int
    """The trial's number in the study (asked for by the driver)."""
    sampler_seed: int
    eval_every: int
    startup_trials: int
    warmup_evals: int
    prune: bool
    config: str | None
    overrides: dict[str, Any]


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("shoal tune needs Optuna, which is not installed; run pip install 'shoal[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _storage(url: str) -> Any:
    optuna = _optuna()
    # Trials in parallel processes share one SQLite file: wait for its lock rather than fail.
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():  # Optuna marks heartbeats experimental
        warnings.simplefilter("ignore")
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                          grace_period=STALE_AFTER_S)


def _trial_id(storage: Any, study_name: str, number: int) -> int:
    return int(storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number))


def _open_trial(job: TrialJob) -> tuple[Any, Any, Any]:
    """``(study, trial, storage)``: trial ``job.number``, asked for by the driver, sampling with this trial's seed."""
    optuna = _optuna()
    storage = _storage(job.storage)
    sampler = optuna.samplers.TPESampler(seed=job.sampler_seed, n_startup_trials=job.startup_trials)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=job.startup_trials, n_warmup_steps=job.warmup_evals)
              if job.prune else optuna.pruners.NopPruner())
    study = optuna.load_study(study_name=job.study_name, storage=storage, sampler=sampler, pruner=pruner)
    return study, optuna.trial.Trial(study, _trial_id(storage, job.study_name, job.number)), storage


class _Heartbeat:
    """Records trial ``trial_id``'s heartbeat every HEARTBEAT_S seconds while the trial trains."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()
        self.thread = threading.Thread(target=self._beat, name="shoal-trial-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001 - a missed beat (database busy) is retried at the next one
                pass

    def __enter__(self) -> _Heartbeat:
        self.storage.record_heartbeat(self.trial_id)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=HEARTBEAT_S + 5)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_trial(job: TrialJob) -> dict[str, Any]:
    """Train trial ``job.number`` of the study, tell the study how it went; a summary of the trial.

    A trial whose settings the runner refuses (a ConfigError from a sampled combination) or
    whose run raises is recorded as failed with its error, and the study goes on.
    """
    from shoal.run.runner import train

    optuna = _optuna()
    study, trial, storage = _open_trial(job)
    run_dir = Path(job.study_dir) / f"trial_{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    summary: dict[str, Any] = {"number": trial.number, "run_dir": str(run_dir)}
    evals = {"count": 0, "pruned": False}

    def on_eval(env_steps: int, mean_return: float) -> bool:
        # The budget point, not the count of evaluations: runs whose iterations differ in size
        # are compared at the same env steps.
        trial.report(mean_return, env_steps // job.eval_every)
        evals["count"] += 1
        if job.steps is not None and env_steps >= job.steps:
            return False  # the full budget: the trial completes with its final evaluation
        evals["pruned"] = job.prune and trial.should_prune()
        return bool(evals["pruned"])  # True ends the run cleanly: checkpoint, metrics, eval.json

    try:
        with _Heartbeat(storage, _trial_id(storage, job.study_name, job.number)):
            space = load_space(job.algo, job.space_file)
            params = sample(space, trial)
            summary["params"] = params
            trial.set_user_attr("params", _jsonable(params))
            overrides = dict(job.overrides)
            overrides.update(params)
            run = train(job.algo, job.env, steps=job.steps, seed=job.seed, run_dir=run_dir, config=job.config,
                        overrides=overrides, quiet=True, tensorboard=False, on_eval=on_eval)
            trial.set_user_attr("config", _jsonable(run.config.to_yaml_dict()))
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
    A resumed study must match the settings it was made with (algorithm, env, budget,
    evaluation schedule, search space); a study folder holds one study's trials.
    """
    from shoal.envs.make import check_env_id
    from shoal.run.resolve import resolve

    optuna = _optuna()
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if evals < 1 or startup_trials < 0 or warmup_evals < 0:
        raise ConfigError("--evals must be >= 1 and the pruner's startup trials and warmup evaluations >= 0")
    if jobs not in ("inprocess", "ray"):
        raise ConfigError(f"trials run inprocess (one after another) or on ray, got {jobs!r}")
    if parallel is not None and parallel < 1:
        raise ConfigError(f"--parallel must be >= 1, got {parallel}")
    if ray_address and jobs != "ray":
        raise ConfigError("--ray-address only applies with --backend ray; drop it or pass --backend ray")
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
    eval_every = int(overrides["eval_every"])
    if base.run.eval_episodes == 0:
        raise ConfigError("trials are scored by their final evaluation; drop eval_episodes=0")

    name = study_name or default_study_name(algo, env)
    folder = (Path(study_dir) if study_dir else Path("runs") / "tune" / name).resolve()
    url = storage or f"sqlite:///{folder / 'study.db'}"
    _claim_folder(folder, name, url)
    store = _storage(url)
    study = optuna.create_study(study_name=name, storage=store, direction="maximize", load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"study {name} in {url} minimizes; shoal tune maximizes the mean return, so choose another "
                          "--study-name")
    _check_settings(study, {"algo": algo, "env": env, "steps": base.run.steps, "evals": evals, "eval_every": eval_every,
                            "eval_episodes": base.run.eval_episodes, "space": space_hash(space_params)}, url)
    with warnings.catch_warnings():  # Optuna marks fail_stale_trials experimental
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)  # trials of sessions that died (no heartbeat for STALE_AFTER_S)
    before = len(study.trials)
    say = report or (lambda _line: None)
    say(f"study {name} in {url}: {before} trials so far; running {trials} more "
        f"({'Ray tasks' if jobs == 'ray' else 'one at a time'}), run directories in {folder}")

    def job_for(number: int) -> TrialJob:
        # The sampler's seed follows the trial's own number: sessions running at once on one
        # storage sample different points, and a study is reproducible trial by trial.
        return TrialJob(algo, env, url, name, str(folder), str(space) if space else None, base.run.steps, seed, number,
                        derive_seed(seed, "tune-sampler", number), eval_every, startup_trials, warmup_evals, prune,
                        str(config) if config else None, overrides)

    done: list[dict[str, Any]] = []
    for summary in _run(study, store, trials, job_for, jobs, parallel, ray_address, base.run.device):
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
            "params": _best_params(best_trial, space_params), "run_dir": best_trial.user_attrs.get("run_dir", ""),
            "config": best_trial.user_attrs.get("config")}
    out_path = Path(out) if out else folder / "best.yaml"
    write_best(out_path, best, space_params, name, len(study.trials))
    return TuneResult(name, url, folder, done, len(study.trials), best, out_path)


def space_hash(space: list[Param]) -> str:
    """A short hash of a search space's parameters (names, kinds, bounds, choices)."""
    text = json.dumps([asdict(p) for p in space], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _claim_folder(folder: Path, name: str, url: str) -> None:
    """The study folder holds the run directories of one study only: refuse another study's."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / STUDY_MARKER
    mine = {"study_name": name, "storage": url}
    if marker.exists():
        theirs = json.loads(marker.read_text())
        if theirs != mine:
            raise ConfigError(f"{folder} holds the trials of study {theirs.get('study_name')!r} in "
                              f"{theirs.get('storage')}; choose another --dir for study {name!r} in {url}")
        return
    atomic_write_text(marker, json.dumps(mine, indent=2))


def _check_settings(study: Any, settings: dict[str, Any], url: str) -> None:
    """Store the settings that make trials comparable on a new study; refuse a resumed one that differs."""
    stored = {k: study.user_attrs[k] for k in STUDY_KEYS if k in study.user_attrs}
    if not stored:
        if study.trials:
            raise ConfigError(f"study {study.study_name} in {url} has trials but no record of its settings (not made "
                              "by shoal tune); choose another --study-name")
        for k, v in settings.items():
            study.set_user_attr(k, v)
        return
    diff = [f"{k} {stored.get(k)!r} (now {settings[k]!r})" for k in STUDY_KEYS if stored.get(k) != settings[k]]
    if diff:
        raise ConfigError(f"study {study.study_name} in {url} was made with other settings: {', '.join(diff)}; "
                          "run it with the same ones or choose another --study-name")


def _best_params(trial: Any, space: list[Param]) -> dict[str, Any]:
    """The best trial's settings: as the trial recorded them, else decoded from Optuna's stored values."""
    recorded = trial.user_attrs.get("params")
    if isinstance(recorded, dict) and set(recorded) == set(trial.params):
        return dict(recorded)
    return decode(space, trial.params)


def _fail_if_running(study: Any, storage: Any, number: int) -> None:
    """Tell FAIL for trial ``number`` unless it already ended (its worker died or never started)."""
    optuna = _optuna()
    trial_id = _trial_id(storage, study.study_name, number)
    if storage.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING:
        try:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        except (ValueError, RuntimeError):  # it ended in the meantime
            pass


def _ask(study: Any) -> int:
    """A new trial's number; its heartbeat is recorded by hand (Optuna's own is for Study.optimize)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return int(study.ask().number)


def _run(study: Any, storage: Any, trials: int, job_for: Callable[[int], TrialJob], jobs: str, parallel: int | None,
         ray_address: str | None, device: str = "cpu") -> Iterator[dict[str, Any]]:
    """Ask for ``trials`` trials on the driver and run them; every asked trial ends told, even on Ctrl-C."""
    asked: list[int] = []
    told: set[int] = set()
    try:
        if jobs == "inprocess":
            for _ in range(trials):
                number = _ask(study)
                asked.append(number)
                summary = run_trial(job_for(number))
                told.add(number)
                yield summary
            return
        from shoal.run.parallel import run_jobs

        for _ in range(trials):
            number = _ask(study)
            asked.append(number)
            storage.record_heartbeat(_trial_id(storage, study.study_name, number))  # stale if this driver dies
        for i, summary, err in run_jobs(run_trial, [(job_for(n),) for n in asked], backend="ray",
                                        max_parallel=parallel, ray_address=ray_address, device=device):
            number = asked[i]
            if err is not None:  # the worker died or raised outside the trial: the study hears of it here
                _fail_if_running(study, storage, number)
                msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                summary = {"number": number, "state": "failed", "error": msg}
            told.add(number)
            yield summary
    finally:
        for number in asked:
            if number not in told:
                _fail_if_running(study, storage, number)


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

    The rest is the trial's resolved config (algorithm and topology settings, and the run
    settings that shape training) as the trial stored it in the study (``best["config"]``; else
    its run directory's config.yaml), so the file trains exactly the trial's configuration;
    ``--steps`` and ``--seed`` are the new run's own.
    """
    cfg = best.get("config")
    if not isinstance(cfg, dict):
        cfg_path = Path(best["run_dir"]) / "config.yaml"
        if not cfg_path.exists():
            raise ShoalError(f"the best trial (trial {best['number']}) stored no config and its run directory "
                             f"{best['run_dir']} has no config.yaml here; run shoal tune where its trials ran")
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
