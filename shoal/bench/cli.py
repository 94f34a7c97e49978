"""Argument parsing for `shoal bench` (the measurements live in measures.py)."""

from __future__ import annotations

import argparse


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """Register `shoal bench` and its subcommands."""
    b = sub.add_parser("bench", help="measure env, sampler, learner and end-to-end throughput")
    bs = b.add_subparsers(dest="bench_cmd", required=True)

    e = bs.add_parser("env", help="raw env step rate with random actions (the physical limit)")
    e.add_argument("--env", default="CartPole-v1")
    e.add_argument("--num-envs", type=int, nargs="+", default=[16])
    e.add_argument("--vector", default="sync", help="sync, async, batched or auto")
    e.add_argument("--seconds", type=float, default=3.0)
    e.add_argument("--json", default="bench_env.json")

    s = bs.add_parser("sampler", help="env steps/s of shoal's actor loop, and its ratio to the raw env rate")
    s.add_argument("--env", default="CartPole-v1")
    s.add_argument("--num-envs", type=int, nargs="+", default=[16])
    s.add_argument("--algo", default="ppo")
    s.add_argument("--backend", default="inprocess", choices=["inprocess", "ray"])
    s.add_argument("--num-actors", type=int, default=1)
    s.add_argument("--vector", default="sync", help="sync, async, batched or auto")
    s.add_argument("--seconds", type=float, default=3.0)
    s.add_argument("--json", default="bench_sampler.json")

    le = bs.add_parser("learner", help="samples/s consumed by an algorithm's learner update")
    le.add_argument("--algo", default="ppo")
    le.add_argument("--env", default="CartPole-v1")
    le.add_argument("--seconds", type=float, default=3.0)
    le.add_argument("--json", default="bench_learner.json")

    p = bs.add_parser("ppo-cartpole", help="wall-clock time for PPO to reach eval mean >= 475 on CartPole-v1")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--eval-every", type=int, default=2048)
    p.add_argument("--vs-sb3", action="store_true", help="also time Stable-Baselines3 PPO (rl-zoo, 100k steps) per seed")
    p.add_argument("--json", default="bench_ppo_cartpole.json")


def run_bench(args: argparse.Namespace) -> int:
    """Dispatch a `shoal bench` subcommand."""
    from shoal.bench import measures

    return measures.run(args)
