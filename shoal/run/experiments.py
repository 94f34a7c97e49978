"""Multi-seed experiments: one run directory per seed under one experiment folder, with a manifest.

Layout::

    runs/EXPERIMENT/
        experiment.json          # algo, env, seeds, each seed's run directory and outcome
        ppo_CartPole-v1_s0/      # an ordinary run directory (config.yaml, metrics.csv, eval.json, ...)
        ppo_CartPole-v1_s1/
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from shoal.envs.ids import bare_env_id
from shoal.errors import ConfigError, ShoalError
from shoal.io.checkpoint import atomic_write_text

MANIFEST = "experiment.json"
LOCK = ".experiment.lock"


def _stem(algo: str, env_id: str) -> str:
    return f"{algo}_{bare_env_id(env_id).replace('/', '-')}"


def seed_run_name(algo: str, env_id: str, seed: int) -> str:
    """The run directory name of one seed inside an experiment folder."""
    return f"{_stem(algo, env_id)}_s{seed}"


def default_experiment_dir(algo: str, env_id: str) -> Path:
    """``runs/ALGO_ENV_TIME``: where an experiment goes without ``--experiment``."""
    return Path("runs") / f"{_stem(algo, env_id)}_{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def is_experiment(path: Path) -> bool:
    """Whether ``path`` is an experiment folder (it holds ``experiment.json``)."""
    return (Path(path) / MANIFEST).is_file()


def _error_text(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, ShoalError) and text else f"{type(e).__name__}: {text or 'no message'}"


def _train_seed(kwargs: dict[str, Any]) -> dict[str, Any]:
    """One seed's run (in a worker process or Ray task): the summary the manifest records."""
    from shoal.core.memory import retain_freed_memory
    from shoal.run.runner import train

    retain_freed_memory()  # a worker of shoal's own: learners reuse freed blocks
    run = train(**kwargs)
    out: dict[str, Any] = {"status": "ok", "env_steps": run.env_steps, "wall_time_s": round(run.wall_time_s, 2)}
    if run.eval:
        out["eval_mean_return"] = run.eval["mean_return"]
        out["eval_episodes"] = run.eval["episodes"]
    return out


def _write(folder: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2))


def config_hash(resolved: dict[str, Any]) -> str:
    """A short hash of a resolved config (``config.yaml``'s content) without its seed: what every seed shares."""
    shared = {**resolved, "run": {k: v for k, v in resolved.get("run", {}).items() if k != "seed"}}
    return hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the experiment folder's lock: one ``shoal train --seeds`` writes to a folder at a time."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another shoal train --seeds is running in {folder}; wait for it to end or choose "
                              "another --experiment folder") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def run_experiment(algo: str, env: str, seeds: Sequence[int], experiment_dir: str | Path | None = None, *,
                   jobs: str = "process", parallel: int | None = None, ray_address: str | None = None,
                   report: Callable[[str], None] | None = None, **run_kwargs: Any) -> dict[str, Any]:
    """Train ``algo`` on ``env`` once per seed, in parallel, each in its own run directory.

    ``jobs``: ``process`` (a fresh process per seed, at most ``parallel`` at once, default one per
    core) or ``ray`` (a Ray task per seed). ``run_kwargs`` go to :func:`shoal.run.runner.train`
    for every seed (``steps``, ``config``, ``overrides``, ``backend`` of each run, ...). A seed
    that fails is recorded with its error in ``experiment.json``; the others keep their results.
    An existing experiment folder takes more seeds, or a failed seed again (its old run directory
    is renamed ``NAME.failed-TIME``), with the same settings (the manifest keeps a hash of the
    resolved config; other settings are refused). One command at a time writes to a folder (a
    file lock). Returns the manifest.
    """
    from shoal.envs.make import check_env_id
    from shoal.run.parallel import check_jobs, default_parallel
    from shoal.run.resolve import resolve

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("--seeds needs at least one seed, e.g. --seeds 0 1 2")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice ({' '.join(map(str, seeds))}); give each seed once")
    if any(s < 0 for s in seeds):
        raise ConfigError(f"seeds must be >= 0, got {min(seeds)}")
    for key in ("seed", "run_dir", "resume"):
        if run_kwargs.get(key) is not None:
            raise ConfigError(f"{key} is set per seed by the experiment; drop it")
    check_jobs(jobs, parallel, ray_address)
    check_env_id(env)
    # Catch a user's mistake once here, not once per seed process.
    cli_run = {k: run_kwargs.get(k) for k in ("steps", "backend", "num_actors", "num_learners", "topology")}
    resolved = resolve(algo, env, env, run_kwargs.get("config"), dict(run_kwargs.get("overrides") or {}),
                       {**cli_run, "seed": seeds[0]})
    digest = config_hash(resolved.to_yaml_dict())

    folder = Path(experiment_dir) if experiment_dir else default_experiment_dir(algo, env)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        return _run_locked(folder, algo, env, seeds, digest, jobs, parallel, ray_address, report, run_kwargs,
                           default_parallel(), resolved.run.device)


def _run_locked(folder: Path, algo: str, env: str, seeds: list[int], digest: str, jobs: str, parallel: int | None,
                ray_address: str | None, report: Callable[[str], None] | None, run_kwargs: dict[str, Any],
                cores: int, device: str = "cpu") -> dict[str, Any]:
    manifest: dict[str, Any]
    if is_experiment(folder):
        manifest = json.loads((folder / MANIFEST).read_text())
        if (manifest["algo"], manifest["env"]) != (algo, env):
            raise ConfigError(f"{folder} holds a {manifest['algo']} {manifest['env']} experiment, not {algo} {env}; "
                              "choose another --experiment folder")
        if manifest.get("config_hash", digest) != digest:
            raise ConfigError(f"{folder} holds seeds trained with other settings (config hash {manifest['config_hash']}, "
                              f"now {digest}); pass the same settings or choose another --experiment folder")
        again = sorted(set(seeds) & {int(s) for s, r in manifest["results"].items() if r.get("status") == "ok"})
        if again:
            raise ConfigError(f"{folder} already has results for seeds {' '.join(map(str, again))}; "
                              "pass only new seeds or choose another --experiment folder")
    else:
        manifest = {"algo": algo, "env": env, "seeds": [], "runs": {}, "results": {},
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    manifest["config_hash"] = digest
    manifest["seeds"] = sorted({*manifest["seeds"], *seeds})
    manifest["command"] = " ".join(sys.argv)
    manifest["jobs"] = jobs
    manifest["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in run_kwargs.items()
                            if k not in ("quiet", "tensorboard")}
    calls = []
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for s in seeds:
        name = seed_run_name(algo, env, s)
        if str(s) in manifest["results"] and (folder / name).exists():  # failed before: its old directory is kept aside
            (folder / name).rename(folder / f"{name}.failed-{stamp}")
        manifest["runs"][str(s)] = name
        manifest["results"][str(s)] = {"status": "running"}
        calls.append(({**run_kwargs, "algo": algo, "env": env, "seed": s, "run_dir": str(folder / name), "quiet": True},))
    _write(folder, manifest)

    say = report or (lambda _line: None)
    say(f"experiment {folder}: {algo} on {env}, seeds {' '.join(map(str, seeds))} "
        f"({'Ray tasks' if jobs == 'ray' else 'processes'}, {min(parallel or cores, len(seeds))} at a time)")
    try:
        for i, result, err in _jobs(calls, jobs, parallel, ray_address, device):
            seed = seeds[i]
            if err is not None:
                manifest["results"][str(seed)] = {"status": "failed", "error": _error_text(err)}
                say(f"seed {seed} failed: {_error_text(err)}")
            else:
                manifest["results"][str(seed)] = result
                ev = f"eval mean return {result['eval_mean_return']:.2f}" if "eval_mean_return" in result else "no evaluation"
                say(f"seed {seed}: {ev} after {result['env_steps']:,} env steps ({folder / manifest['runs'][str(seed)]})")
            _write(folder, manifest)
    finally:
        for s in seeds:
            if manifest["results"][str(s)].get("status") == "running":
                manifest["results"][str(s)] = {"status": "failed", "error": "interrupted"}
        _write(folder, manifest)
    manifest["dir"] = str(folder)
    return manifest


def _jobs(calls: list[tuple[Any, ...]], jobs: str, parallel: int | None,
          ray_address: str | None, device: str = "cpu") -> Any:
    from shoal.run.parallel import run_jobs

    return run_jobs(_train_seed, calls, backend=jobs, max_parallel=parallel, ray_address=ray_address, device=device)


def failed_seeds(manifest: dict[str, Any]) -> list[int]:
    """Seeds whose run failed (or never finished)."""
    return sorted(int(s) for s, r in manifest["results"].items() if r.get("status") != "ok")


@dataclass
class Experiment:
    """A finished experiment read back from its folder: the run directory of each seed that succeeded."""

    path: Path
    algo: str
    env: str
    runs: dict[int, Path]
    failed: dict[int, str] = field(default_factory=dict)
    """Seeds the manifest lists that failed, never finished, or whose run directory is missing: why."""

    @property
    def listed(self) -> int:
        """How many seeds the experiment ran (finished or not)."""
        return len(self.runs) + len(self.failed)

    def missing_note(self) -> str:
        """``"k of n seeds failed or missing"``, or empty when every seed is there."""
        return f"{len(self.failed)} of {self.listed} seeds failed or missing" if self.failed else ""

    @property
    def label(self) -> str:
        """How plots and tables name it: the algorithm, the env and the folder."""
        base = f"{self.algo} on {self.env}"
        plain = self.path.name == self.algo or self.path.name.startswith(_stem(self.algo, self.env))
        return base if plain else f"{base} ({self.path.name})"


def load_experiment(path: str | Path) -> Experiment:
    """The experiment in ``path``; a ShoalError if it is not one or no seed finished."""
    folder = Path(path)
    if not is_experiment(folder):
        raise ShoalError(f"{folder} is not an experiment folder (no {MANIFEST}); pass a folder written by "
                         "`shoal train ALGO --env ID --seeds ...`")
    m = json.loads((folder / MANIFEST).read_text())
    runs: dict[int, Path] = {}
    failed: dict[int, str] = {}
    for s in m.get("seeds", []) or [int(k) for k in m["results"]]:
        r, name = m["results"].get(str(s), {}), m["runs"].get(str(s))
        if r.get("status") != "ok":
            failed[int(s)] = r.get("error", r.get("status", "no result"))
        elif not name or not (folder / name).is_dir():
            failed[int(s)] = f"its run directory {name} is missing"
        else:
            runs[int(s)] = folder / name
    if not runs:
        raise ShoalError(f"no seed of the experiment in {folder} finished; see the errors in {folder / MANIFEST}")
    return Experiment(folder, m["algo"], m["env"], dict(sorted(runs.items())), dict(sorted(failed.items())))
