"""Argument parsing for `shoal bench` (the measurements live beside this file)."""

from __future__ import annotations

import argparse


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """Register `shoal bench` and its subcommands."""
    b = sub.add_parser("bench", help="measure env, sampler, learner and end-to-end throughput")
    bs = b.add_subparsers(dest="bench_cmd", required=True)
    bp = bs.add_parser("ppo-cartpole", help="wall-clock time for PPO to reach eval mean >= 475 on CartPole-v1")
    bp.add_argument("--seed", type=int, default=0)
    bp.add_argument("--json", default="bench_ppo_cartpole.json")


def run_bench(args: argparse.Namespace) -> int:
    """Dispatch a `shoal bench` subcommand."""
    from shoal.bench import measures

    return measures.run(args)
