"""Recurrent policies on shoal/CartPoleNoVel-v1: time until an evaluation reaches 400, shoal against sb3-contrib.

    python benchmarks/recurrent.py                       # seed 0, every entry
    python benchmarks/recurrent.py --seeds 0 1 2         # medians over seeds
    python benchmarks/recurrent.py --only shoal_ppo      # one entry
    python benchmarks/recurrent.py --budget 50000        # another step budget, for every entry
    python benchmarks/recurrent.py --merge a.json b.json # summarise seeds run as separate --json invocations

CartPole-v1 observing only the cart position and the pole angle (``shoal/CartPoleNoVel-v1``,
the same dynamics on both sides), so a policy must remember to infer the velocities.

- ``shoal_ppo``: ``shoal.train("ppo", env="shoal/CartPoleNoVel-v1")`` with its shipped defaults
  (``shoal/configs/ppo.yaml``): an LSTM policy at rl-zoo's ppo_lstm hyperparameters, observations
  normalised by running statistics (updated after each update, so actor and learner see a rollout
  alike) and rewards scaled by the running std of the discounted return (gamma 0.98), as rl-zoo's
  ``normalize: true`` does. shoal initialises its networks orthogonally (LSTM weights gain 1,
  hidden layers sqrt 2, policy head 0.01, value head 1, zero biases), which rl-zoo turns off
  for this env (``ortho_init=False``): the one setting the two sides do not share.
- ``shoal_r2d2``: ``shoal.train("r2d2", env="shoal/CartPoleNoVel-v1")`` with its shipped defaults
  (``shoal/configs/r2d2.yaml``); it evaluates at the end of the first iteration past each
  ``--eval-every`` multiple, an iteration being its own size.
- ``sb3_recurrent_ppo``: sb3-contrib's ``RecurrentPPO("MlpLstmPolicy")`` with rl-zoo's
  hyperparameters for CartPoleNoVel-v1 (hyperparams/ppo_lstm.yml, :data:`RL_ZOO_PPO_LSTM`,
  ``ortho_init=False``: PyTorch's default initialisation) in ``VecNormalize(norm_obs=True,
  norm_reward=True, gamma=0.98)``, what rl-zoo's ``normalize: true`` builds for training (its
  evaluation env normalises observations only, with the training statistics).

More shoal algorithms are one more entry of :data:`SHOAL_ENTRIES` (algorithm name and overrides).

Every entry runs ``--budget`` env steps at most (0: shoal PPO's shipped 150k for every entry).

Evaluation, the same on both sides: every ``--eval-every`` env steps (5,120: a whole number of
shoal PPO iterations and of sb3 rollouts of 8 x 32 steps, so both evaluate at exactly the same
steps, each after the update on the rollout that crossed the multiple), ``--eval-episodes``
greedy episodes, one per env copy, each from a zero LSTM state; training stops at the first
evaluation whose mean return reaches 400. sb3's evaluation is a callback at the start of each
rollout, so after ``train()`` on the previous one (sb3's ``EvalCallback`` would run inside the
rollout, one update behind shoal's), syncing the observation statistics first.

``time`` runs from just before the agent is built (``shoal.train`` / ``RecurrentPPO(...)``) until
training stops, evaluations included, imports excluded; ``cpu`` is the CPU time of that span (all
threads: steadier than wall time on a shared machine); ``process`` is the whole subprocess.
Ratios are shoal / peer (target <= 0.5x). Both ratios include env throughput as well as the
learner's: shoal steps its numpy-batched ``BatchedCartPoleNoVel`` (all copies in one array
step), sb3 steps 8 Python ``gym.make`` envs one by one through ``DummyVecEnv``, ``Monitor`` and
``VecNormalize``, as rl-zoo runs it.
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
from _harness import Timer, limit_threads, run_worker  # noqa: E402

ENV_ID = "shoal/CartPoleNoVel-v1"
TARGET_RETURN = 400.0
TARGET_RATIO = 0.5
PEER = "sb3_recurrent_ppo"

#: shoal entries: name -> (algorithm, overrides of its shipped defaults for this env).
SHOAL_ENTRIES: dict[str, tuple[str, dict[str, Any]]] = {
    "shoal_ppo": ("ppo", {}),
    "shoal_r2d2": ("r2d2", {}),
}

#: rl-zoo's RecurrentPPO hyperparameters for CartPoleNoVel-v1 (hyperparams/ppo_lstm.yml; n_timesteps 1e5 there,
#: ``normalize: true``: VecNormalize's defaults, observations and rewards, with the algorithm's gamma; built in
#: the worker). ``lin_x`` schedules are written out in the worker.
RL_ZOO_PPO_LSTM: dict[str, Any] = {
    "n_envs": 8, "n_steps": 32, "batch_size": 256, "n_epochs": 20, "gamma": 0.98, "gae_lambda": 0.8,
    "learning_rate": 1e-3, "clip_range": 0.2, "ent_coef": 0.0,
    "policy_kwargs": {"ortho_init": False, "activation_fn": "relu", "lstm_hidden_size": 64, "enable_critic_lstm": True,
                      "net_arch": {"pi": [64], "vf": [64]}}}


def shoal_budget() -> int:
    """shoal's shipped PPO step budget for this env (``shoal/configs/ppo.yaml``)."""
    from shoal.agents import registry

    return int(registry.get("ppo").defaults(ENV_ID)["steps"])


def worker_shoal(name: str, seed: int, threads: int, eval_every: int, episodes: int, budget: int) -> dict[str, Any]:
    limit_threads(threads)
    import shoal

    algo, overrides = SHOAL_ENTRIES[name]
    with tempfile.TemporaryDirectory() as tmp:
        with Timer() as t:
            run = shoal.train(algo, env=ENV_ID, seed=seed, steps=budget, run_dir=Path(tmp) / "run", tensorboard=False,
                              overrides={"eval_every": eval_every, "eval_episodes": episodes,
                                         "target_return": TARGET_RETURN, "torch_threads": threads, **overrides})
    evals = [r for r in run.history if "eval_return_mean" in r]
    eval_mean = run.eval["mean_return"] if run.eval else float("nan")
    return {"train_s": t.wall_s, "cpu_s": t.cpu_s, "steps": run.env_steps, "eval_mean": eval_mean,
            "evaluations": len(evals), "solved": eval_mean >= TARGET_RETURN}


def worker_sb3(seed: int, threads: int, eval_every: int, episodes: int, budget: int) -> dict[str, Any]:
    limit_threads(threads)
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize, sync_envs_normalization
    from torch import nn

    import shoal.envs  # noqa: F401  (registers shoal/CartPoleNoVel-v1 with Gymnasium)

    class EvalAfterTrain(BaseCallback):
        """Evaluates at the start of a rollout (so after ``train()`` on the previous one) once the step count
        crosses a multiple of ``eval_every``, and at the end of training; stops at the first mean >= target."""

        def __init__(self, eval_env: VecNormalize) -> None:
            super().__init__()
            self.eval_env = eval_env
            self.evaluations, self.last_mean, self.solved, self.steps_at_stop = 0, float("nan"), False, 0
            self.multiples = 0  # of eval_every crossed by the evaluations so far

        def _maybe_evaluate(self) -> None:
            if self.solved or self.num_timesteps // eval_every <= self.multiples:
                return
            self.multiples = self.num_timesteps // eval_every
            self.evaluations += 1
            sync_envs_normalization(self.training_env, self.eval_env)  # the training env's observation statistics
            mean, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=episodes, deterministic=True)
            assert not isinstance(mean, list)  # the mean over episodes (return_episode_rewards=False)
            self.last_mean, self.steps_at_stop = float(mean), self.num_timesteps
            self.solved = self.last_mean >= TARGET_RETURN

        def _on_rollout_start(self) -> None:
            self._maybe_evaluate()

        def _on_step(self) -> bool:
            return not self.solved  # a target reached at the rollout's start stops before its first step counts

        def _on_training_end(self) -> None:
            self._maybe_evaluate()

    hp = dict(RL_ZOO_PPO_LSTM)
    n_envs = hp.pop("n_envs")
    lr, clip = hp.pop("learning_rate"), hp.pop("clip_range")
    kwargs = dict(hp.pop("policy_kwargs"), activation_fn=nn.ReLU)
    with Timer() as t:
        # rl-zoo's ``normalize: true``: VecNormalize with its defaults (observations and rewards) and the algorithm's gamma
        env = VecNormalize(make_vec_env(ENV_ID, n_envs=n_envs, seed=seed), norm_obs=True, norm_reward=True,
                           gamma=hp["gamma"])
        model = RecurrentPPO("MlpLstmPolicy", env, learning_rate=lambda p: p * lr, clip_range=lambda p: p * clip,
                             policy_kwargs=kwargs, seed=seed, device="cpu", verbose=0, **hp)
        eval_env = VecNormalize(make_vec_env(ENV_ID, n_envs=episodes, seed=seed + 10_000), norm_obs=True,
                                norm_reward=False, training=False)  # observation statistics synced before each evaluation
        cb = EvalAfterTrain(eval_env)
        model.learn(total_timesteps=budget, callback=cb)
    steps = cb.steps_at_stop if cb.solved else int(model.num_timesteps)
    return {"train_s": t.wall_s, "cpu_s": t.cpu_s, "steps": steps, "eval_mean": cb.last_mean,
            "evaluations": cb.evaluations, "solved": cb.solved}


def _line(name: str, r: dict[str, Any]) -> str:
    solved = f"reached {TARGET_RETURN:.0f}" if r["solved"] else f"NOT reached {TARGET_RETURN:.0f}"
    return (f"{name:18s}: time {r['train_s']:6.1f} s, cpu {r['cpu_s']:6.1f} s (process {r['process_s']:5.1f} s, "
            f"cpu {r['process_cpu_s']:5.1f} s)  {r['steps']:7d} env steps  last eval {r['eval_mean']:6.1f} after "
            f"{r['evaluations']} evaluations  {solved}")


def merge(paths: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The results of several ``--json`` files, the first run of each (entry, seed) kept, seeds sorted."""
    merged: dict[str, dict[int, dict[str, Any]]] = {}
    for p in paths:
        for which, rs in json.loads(Path(p).read_text()).items():
            for r in rs:
                merged.setdefault(which, {}).setdefault(int(r["seed"]), r)
    print(f"merged {len(paths)} result file(s): {', '.join(f'{w} seeds {sorted(s)}' for w, s in merged.items())}")
    return {w: [s[k] for k in sorted(s)] for w, s in merged.items()}


def summarize(results: dict[str, list[dict[str, Any]]]) -> None:
    """Medians over seeds per entry, side by side, and each shoal entry's ratio to the peer over common seeds."""
    print()
    for which, rs in results.items():
        if rs:
            print(f"{which:18s}: median time {statistics.median(r['train_s'] for r in rs):6.1f} s, median cpu "
                  f"{statistics.median(r['cpu_s'] for r in rs):6.1f} s, median steps "
                  f"{statistics.median(r['steps'] for r in rs):8.0f}, reached {TARGET_RETURN:.0f} on "
                  f"{sum(r['solved'] for r in rs)} of {len(rs)} seeds")
    peer = {r["seed"]: r for r in results.get(PEER, [])}
    for which in SHOAL_ENTRIES:
        pairs = [(r, peer[r["seed"]]) for r in results.get(which, []) if r["seed"] in peer]
        if not pairs:
            continue
        wall = statistics.median(s["train_s"] for s, _ in pairs) / statistics.median(b["train_s"] for _, b in pairs)
        cpu = statistics.median(s["cpu_s"] for s, _ in pairs) / statistics.median(b["cpu_s"] for _, b in pairs)
        ok = wall <= TARGET_RATIO and all(s["solved"] for s, _ in pairs)
        print(f"ratio {which} / {PEER} (median times, {len(pairs)} seed(s)): time {wall:.3f}x, cpu {cpu:.3f}x; "
              f"target <= {TARGET_RATIO}x with every shoal seed reaching {TARGET_RETURN:.0f}: {'OK' if ok else 'MISSED'}")
    if any(not r["solved"] for r in results.get(PEER, [])):
        print(f"note: a {PEER} seed that did not reach the target is timed over its whole budget, which understates "
              "its time to the target")


def main(argv: list[str] | None = None) -> None:
    entries = [*SHOAL_ENTRIES, PEER]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each trainer's process")
    parser.add_argument("--eval-every", type=int, default=5120, help="env steps between evaluations (every entry)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="greedy episodes per evaluation (every entry)")
    parser.add_argument("--budget", type=int, default=0,
                        help="every entry's step budget (0: shoal PPO's shipped budget for this env)")
    parser.add_argument("--only", choices=entries, action="append", help="run these entries only (repeatable)")
    parser.add_argument("--worker", choices=entries, help=argparse.SUPPRESS)
    parser.add_argument("--json", default="", help="also write the per-seed results here")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="summarise the --json files of several runs")
    args = parser.parse_args(argv)
    if args.merge:
        summarize(merge(args.merge))
        return
    budget = args.budget or shoal_budget()
    if args.worker:
        seed = args.seeds[0]
        if args.worker == PEER:
            res = worker_sb3(seed, args.threads, args.eval_every, args.eval_episodes, budget)
        else:
            res = worker_shoal(args.worker, seed, args.threads, args.eval_every, args.eval_episodes, budget)
        print(json.dumps(res))
        return

    described = ", ".join(f"{n} ({a}, shipped defaults" + (f", overrides {o})" if o else ")")
                          for n, (a, o) in SHOAL_ENTRIES.items())
    print(f"Recurrent policies on {ENV_ID}: time until an evaluation's mean return >= {TARGET_RETURN:.0f}; seeds "
          f"{args.seeds}; {args.threads} torch thread(s) per process; every entry evaluates every {args.eval_every} "
          f"env steps on {args.eval_episodes} greedy episodes (one per env copy).\n"
          f"  shoal entries: {described}, "
          f"budget {budget} steps\n"
          f"  {PEER}: sb3-contrib RecurrentPPO at rl-zoo's ppo_lstm.yml settings in VecNormalize (observations and "
          f"rewards), budget {budget} steps",
          flush=True)
    results: dict[str, list[dict[str, Any]]] = {e: [] for e in entries}
    common = ["--threads", str(args.threads), "--eval-every", str(args.eval_every),
              "--eval-episodes", str(args.eval_episodes), "--budget", str(budget)]
    for seed in args.seeds:
        for which in entries:
            if args.only and which not in args.only:
                continue
            r = run_worker(__file__, which, ["--seeds", str(seed), *common])
            r["seed"] = seed
            results[which].append(r)
            if args.json:  # after every run, so an interrupted benchmark keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=2))
            print(f"seed {seed} " + _line(which, r), flush=True)
    summarize(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
