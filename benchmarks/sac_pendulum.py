"""SAC on Pendulum-v1 at rl-zoo's settings: shoal against Stable-Baselines3, seed by seed.

    python benchmarks/sac_pendulum.py                      # seed 0, 20k steps each (SB3 takes minutes)
    python benchmarks/sac_pendulum.py --seeds 0 1 2 3 4    # the 5-seed comparison
    python benchmarks/sac_pendulum.py --steps 3000 --only shoal   # a quick look
    python benchmarks/sac_pendulum.py --defaults           # shoal with its shipped Pendulum defaults instead
    python benchmarks/sac_pendulum.py --merge a.json b.json   # summarise seeds run as separate --json invocations

Both libraries train with exactly rl-zoo's Pendulum-v1 settings (hyperparams/sac.yml:
20k steps, learning_rate 1e-3; SB3 defaults otherwise): 256x256 ReLU networks, batch
256, buffer 1M, learning_starts 100 (uniform random actions until then), one gradient
update per env step, tau 0.005, gamma 0.99, twin critics, automatic temperature from
1.0 with target entropy -1, one env. shoal gets them as overrides of its config
(:data:`SHOAL_AT_RL_ZOO`), SB3 as ``shoal.bench.peers.RL_ZOO_SAC_PENDULUM``. Both make 19,900
gradient updates (one per env step after the first 100).

Where the two SAC implementations differ (none changes the settings above):

- shoal computes an update's policy and temperature losses through the critics as they were
  before that update's critic step (every gradient of a step from the same weights); SB3
  evaluates the policy loss after its critic optimiser has stepped;
- the tanh log-density correction: shoal's exact ``2 (log 2 - u - softplus(-2u))``, SB3's
  ``log(1 - tanh(u)**2 + 1e-6)`` (they differ only deep in the tanh's saturation);
- shoal steps its numpy twin of Pendulum-v1 (the same dynamics, identical observations), SB3
  ``gym.make`` under ``Monitor`` and ``DummyVecEnv``;
- only shoal writes a run directory inside the timed span (10 checkpoints with the replay,
  config, metrics): that counts against shoal.

Each seed's pair runs shoal first on even seeds and SB3 first on odd ones.

Per seed, shoal and SB3 run one after the other (interleaved, so machine load hits both
alike), each in a fresh process with the same torch thread count and the same allocator
setting: glibc keeps freed blocks, as in a ``shoal train`` process (``--no-retain-memory``:
glibc's defaults, as in a user's process calling ``shoal.train``). ``time`` runs from
just before the agent is built (``shoal.train`` / ``SAC(...)``) until training ends,
imports and the evaluation excluded; ``process`` is the whole subprocess. Both are then
evaluated by the same code: 20 deterministic episodes on the same seeded envs. Needs
``pip install 'shoal[bench]'`` for the SB3 side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Timer, limit_threads, merge_results, run_worker  # noqa: E402

ENV_ID = "Pendulum-v1"
TARGET_RATIO = 0.5
TARGET_EVAL = -200.0

#: shoal's SAC config set to rl-zoo's Pendulum-v1 settings (what SB3 runs).
SHOAL_AT_RL_ZOO: dict[str, Any] = {
    "hidden": [256, 256], "activation": "relu", "actor_lr": 1e-3, "critic_lr": 1e-3, "alpha_lr": 1e-3,
    "batch_size": 256, "buffer_size": 1_000_000, "learning_starts": 100, "random_warmup": True, "gamma": 0.99,
    "tau": 0.005, "replay_ratio": 1.0, "num_envs": 1, "n_step": 1, "alpha": 1.0, "autotune": True,
    "policy_delay": 1, "target_every": 1, "normalize_obs": False, "max_grad_norm": 0.0}


def _evaluate(policy: Any, episodes: int, seed: int) -> dict[str, float]:
    from shoal.envs.make import env_spec
    from shoal.run.evaluate import evaluate

    spec = env_spec(ENV_ID)
    r = evaluate(policy, ENV_ID, episodes, seed, (spec.action_low, spec.action_high))
    return {"eval_mean": r["mean_return"], "eval_std": r["std_return"]}


def _process_settings(threads: int, retain_memory: bool) -> None:
    """The same in both workers: ``threads`` torch threads and (unless told not to) glibc keeping freed blocks.

    ``shoal train`` and shoal's own learner processes retain freed memory
    (:func:`shoal.core.memory.retain_freed_memory`); ``shoal.train`` called from user
    code leaves the process's allocator alone, which ``--no-retain-memory`` measures.
    """
    limit_threads(threads)
    if retain_memory:
        from shoal.core.memory import retain_freed_memory

        retain_freed_memory()


def worker_shoal(steps: int, seed: int, threads: int, episodes: int, overrides: list[str],
                 defaults: bool, retain_memory: bool = True) -> dict[str, Any]:
    _process_settings(threads, retain_memory)
    import shoal
    from shoal.config import parse_overrides
    from shoal.run.reload import load_policy

    settings = {} if defaults else dict(SHOAL_AT_RL_ZOO)
    with tempfile.TemporaryDirectory() as tmp:
        with Timer() as t:
            run = shoal.train("sac", env=ENV_ID, steps=steps, seed=seed, run_dir=Path(tmp) / "run",
                              tensorboard=False, overrides={**settings, "eval_episodes": 0, "torch_threads": threads,
                                                            **parse_overrides(overrides)})
        policy, cfg, _ = load_policy(run.run_dir)
        return {"train_s": t.wall_s, "cpu_s": t.cpu_s, "steps": run.env_steps, "hidden": cfg["agent"]["hidden"],
                "batch_size": cfg["agent"]["batch_size"], "learning_starts": cfg["agent"]["learning_starts"],
                **_evaluate(policy, episodes, seed + 10_000)}


def worker_sb3(steps: int, seed: int, threads: int, episodes: int, retain_memory: bool = True) -> dict[str, Any]:
    _process_settings(threads, retain_memory)
    from shoal.bench.peers import sb3_sac

    model, train_s, cpu_s = sb3_sac(ENV_ID, seed, steps)

    def policy(obs: Any) -> Any:
        return model.predict(obs, deterministic=True)[0]

    return {"train_s": train_s, "cpu_s": cpu_s, "steps": steps, **_evaluate(policy, episodes, seed + 10_000)}


def summarize(results: dict[str, list[dict[str, Any]]]) -> None:
    """Print the medians over seeds and the shoal / SB3 ratio of the median times."""
    for which in ("shoal", "sb3"):
        rs = results[which]
        if rs:
            print(f"{which}: median time {statistics.median(r['train_s'] for r in rs):.1f} s, median cpu "
                  f"{statistics.median(r['cpu_s'] for r in rs):.1f} s; eval >= "
                  f"{TARGET_EVAL:.0f} on {sum(r['eval_mean'] >= TARGET_EVAL for r in rs)} of {len(rs)} seeds")
    if results["shoal"] and results["sb3"]:
        ratio = (statistics.median(r["train_s"] for r in results["shoal"])
                 / statistics.median(r["train_s"] for r in results["sb3"]))
        per_seed = statistics.median(s["train_s"] / b["train_s"] for s, b in zip(results["shoal"], results["sb3"]))
        cpu = (statistics.median(r["cpu_s"] for r in results["shoal"])
               / statistics.median(r["cpu_s"] for r in results["sb3"]))
        print(f"median-time ratio shoal / SB3: {ratio:.3f}x (cpu time {cpu:.3f}x; median of per-seed ratios {per_seed:.3f}x; "
              f"target <= {TARGET_RATIO}x: {'OK' if ratio <= TARGET_RATIO else 'MISSED'})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps each library trains for")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each trainer's process (both sides)")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--defaults", action="store_true",
                        help="shoal with its shipped Pendulum defaults (shoal/configs/sac.yaml) instead of rl-zoo's")
    parser.add_argument("--shoal", action="append", default=[], metavar="KEY=VALUE",
                        help="override a shoal SAC setting (repeatable), e.g. --shoal hidden=[64,64]")
    parser.add_argument("--no-retain-memory", action="store_true",
                        help="leave glibc's malloc at its defaults in both workers (as in a user's process calling "
                             "shoal.train) instead of retaining freed blocks (as `shoal train` does)")
    parser.add_argument("--only", choices=["shoal", "sb3"], help="run one side only")
    parser.add_argument("--worker", choices=["shoal", "sb3"], help=argparse.SUPPRESS)
    parser.add_argument("--json", default="", help="also write the per-seed results here")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="summarise the --json files of several runs")
    args = parser.parse_args(argv)
    if args.merge:
        summarize(merge_results(args.merge))
        return

    if args.worker:
        seed = args.seeds[0]
        if args.worker == "shoal":
            res = worker_shoal(args.steps, seed, args.threads, args.eval_episodes, args.shoal, args.defaults,
                               not args.no_retain_memory)
        else:
            res = worker_sb3(args.steps, seed, args.threads, args.eval_episodes, not args.no_retain_memory)
        print(json.dumps(res))
        return

    shoal_settings = ("its shipped Pendulum defaults (shoal/configs/sac.yaml)" if args.defaults else
                      "rl-zoo's settings: " + ", ".join(f"{k}={v}" for k, v in SHOAL_AT_RL_ZOO.items()))
    print(f"SAC on {ENV_ID}, {args.steps} env steps, seeds {args.seeds}, {args.threads} torch thread(s) per process "
          f"(both sides)\n  SB3:   rl-zoo's settings (lr 1e-3, net [256, 256], batch 256, learning_starts 100, "
          f"buffer 1M, train_freq 1, gradient_steps 1, tau 0.005, gamma 0.99, ent_coef auto)\n"
          f"  shoal: {shoal_settings}{' + ' + ' '.join(args.shoal) if args.shoal else ''}\n"
          f"  time = wall-clock from agent construction to end of training, imports and evaluation excluded (the "
          f"same span on both sides); cpu = CPU time (all threads) of that span, less sensitive to other load on "
          f"a shared machine; process = the whole subprocess; eval = {args.eval_episodes} deterministic episodes after "
          f"training, same seeded envs for both; freed memory "
          f"{'left to glibc' if args.no_retain_memory else 'retained in both workers (as in `shoal train`)'}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {"shoal": [], "sb3": []}
    common = ["--steps", str(args.steps), "--threads", str(args.threads), "--eval-episodes", str(args.eval_episodes)]
    common += ["--defaults"] if args.defaults else []
    common += ["--no-retain-memory"] if args.no_retain_memory else []
    for o in args.shoal:
        common += ["--shoal", o]
    for seed in args.seeds:
        for which in ("shoal", "sb3") if seed % 2 == 0 else ("sb3", "shoal"):
            if args.only and which != args.only:
                continue
            r = run_worker(__file__, which, ["--seeds", str(seed), *common])
            r["seed"] = seed
            results[which].append(r)
            if args.json:  # after every run, so an interrupted benchmark keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=2))
            name = "shoal SAC" if which == "shoal" else "SB3 SAC  "
            print(f"seed {seed} {name}: time {r['train_s']:7.1f} s ({r['steps'] / r['train_s']:5.1f} steps/s), cpu "
                  f"{r['cpu_s']:7.1f} s (process {r['process_s']:.1f} s, cpu {r['process_cpu_s']:.1f} s)  "
                  f"eval {r['eval_mean']:8.1f} +- {r['eval_std']:.1f}", flush=True)
        if not args.only:
            s, b = results["shoal"][-1], results["sb3"][-1]
            print(f"seed {seed} ratio shoal / SB3: time {s['train_s'] / b['train_s']:.3f}x, "
                  f"cpu {s['cpu_s'] / b['cpu_s']:.3f}x, process {s['process_s'] / b['process_s']:.3f}x", flush=True)
    summarize(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
