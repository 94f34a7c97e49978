"""The ``shoal`` command: train, eval, plot, list, tune, report (and bench)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from shoal.errors import ShoalError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shoal", description="Reinforcement learning at every scale.")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train an algorithm; writes a run directory")
    t.add_argument("algo", nargs="?", help="algorithm name (see `shoal list`); optional with --resume")
    t.add_argument("--env", help="Gymnasium env id, e.g. CartPole-v1, or module:EnvId for an env that module registers")
    t.add_argument("--steps", type=int, help="total env steps (default: per-env default)")
    t.add_argument("--seed", type=int, help="run seed (default 0)")
    t.add_argument("--run-dir", help="run directory (default runs/ALGO_ENV_sSEED_TIME)")
    t.add_argument("--backend", choices=["inprocess", "threaded", "ray"],
                   help="where nodes run: inprocess (default, deterministic), threaded (a thread per node), ray")
    t.add_argument("--num-actors", type=int, help="actor nodes (default 1)")
    t.add_argument("--num-learners", type=int, help="learner processes averaging gradients each step, each on "
                   "batch/num-learners (default 1; topologies local and impala)")
    t.add_argument("--topology", help="where the algorithm's pieces run: local, apex, impala, seed, a3c, ga3c, gorila, dppo "
                   "(default: the algorithm's own; `shoal list` shows which fit); its settings are topology.KEY=VALUE")
    t.add_argument("--ray-address", help="connect to this Ray cluster instead of starting a private one")
    t.add_argument("--config", help="YAML file of settings")
    t.add_argument("--resume", help="continue the run in this directory from its last checkpoint; --steps and key=value "
                   "change its settings (not those that shape the checkpoint, e.g. hidden or num_envs)")
    t.add_argument("--quiet", action="store_true", help="no progress line and no line naming the defaults applied")
    t.add_argument("--seeds", nargs="+", metavar="SEED", help="run these seeds in parallel, one run directory each under "
                   "--experiment (with --backend ray: a Ray task per seed)")
    t.add_argument("--experiment", help="with --seeds: the experiment folder (default runs/ALGO_ENV_TIME)")
    t.add_argument("--parallel", type=int, help="with --seeds: seeds at a time (default: one per core)")
    t.add_argument("--track", choices=["wandb"], help="also log metrics, config and videos to Weights & Biases "
                   "(WANDB_MODE=offline: to a local folder for `wandb sync`); TensorBoard is always written")
    t.add_argument("--wandb-project", help="W&B project (default shoal)")
    t.add_argument("--wandb-entity", help="W&B user or team (default: the account's own)")
    t.add_argument("--dataset", help="offline algorithms (bc, cql, offline_dqn, offline_sac): the Minari dataset id or "
                   "folder to learn from; the env defaults to the dataset's")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. lr=3e-4 hidden=[64,64]")

    e = sub.add_parser("eval", help="evaluate the last checkpoint of a run")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, default=20)
    e.add_argument("--seed", type=int, default=None, help="evaluation seed (default: the run's eval seed)")
    e.add_argument("--out", help="also write the result as JSON here")
    e.add_argument("--video", metavar="PATH.mp4", help="also record the greedy policy's first episodes into this mp4")
    e.add_argument("--video-episodes", type=int, default=1, help="episodes in the video (default 1)")
    e.add_argument("--video-frames", type=int, help="frames at most in the video (default: the run's video_max_frames)")

    x = sub.add_parser("export", help="write a run's greedy policy as a standalone ONNX or TorchScript file")
    x.add_argument("run_dir")
    x.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    x.add_argument("--out", help="file to write (default RUN_DIR/policy.onnx or RUN_DIR/policy.pt)")

    pl = sub.add_parser("plot", help="plot learning curves of one or more runs into a PNG")
    pl.add_argument("run_dirs", nargs="+", help="run directories, or experiment folders (mean over seeds, 95%% bootstrap band)")
    pl.add_argument("--out", default="learning_curve.png")
    pl.add_argument("--x", default="env_steps", help="x column: env_steps or wall_time_s")
    pl.add_argument("--y", default="episode_return_mean")
    pl.add_argument("--title")
    pl.add_argument("--ymin", type=float, help="lower y limit (e.g. to zoom past early episodes)")
    pl.add_argument("--ymax", type=float)

    sub.add_parser("list", help="algorithms, topologies and backends")

    g = sub.add_parser("play", help="play a trained alphazero run in the terminal, or serve it as an engine")
    g.add_argument("game", help="tictactoe, connect4 or gomoku9 (the run's game)")
    g.add_argument("--run-dir", required=True, help="directory of an alphazero run")
    g.add_argument("--engine", action="store_true", help="line protocol: read move histories on stdin, answer moves")
    g.add_argument("--simulations", type=int, help="search size per move (default: the run's engine size)")
    g.add_argument("--side", choices=["first", "second"], default="first", help="your side when playing in the terminal")
    g.add_argument("--untrained", action="store_true", help="use the run's initial (untrained) network")

    from shoal.bench.cli import add_bench_parser

    add_bench_parser(sub)
    from shoal.run.commands import add_parsers

    add_parsers(sub)  # tune, report
    return p


def _cmd_train(a: argparse.Namespace) -> int:
    from shoal.config import parse_overrides
    from shoal.core.memory import retain_freed_memory
    from shoal.run.runner import train

    tracking = {k: v for k, v in (("track", a.track), ("wandb_project", a.wandb_project), ("wandb_entity", a.wandb_entity)) if v}
    if a.seeds is not None:
        from shoal.run.commands import cmd_train_seeds

        return cmd_train_seeds(a, {**parse_overrides(a.overrides), **tracking})
    if a.experiment or a.parallel is not None:
        raise ShoalError("--experiment and --parallel apply to --seeds; add --seeds 0 1 2 or drop them")
    from shoal.run.offline import offline_settings

    a.env, overrides = offline_settings(a.algo, a.dataset, a.env, parse_overrides(a.overrides))
    retain_freed_memory()  # this process is shoal's own (no user code in it): learners reuse freed blocks
    if a.resume and a.run_dir:
        raise ShoalError("pass either --resume DIR or --run-dir DIR, not both")
    run = train(a.algo, a.env, steps=a.steps, seed=a.seed, run_dir=a.run_dir, backend=a.backend, num_actors=a.num_actors,
                num_learners=a.num_learners,
                topology=a.topology, config=a.config, overrides={**overrides, **tracking}, resume=a.resume,
                ray_address=a.ray_address,
                quiet=a.quiet)
    msg = f"run directory: {run.run_dir}  env steps: {run.env_steps:,}  wall: {run.wall_time_s:.1f}s"
    if run.eval:
        msg += f"  eval mean return: {run.eval['mean_return']:.1f} +- {run.eval['std_return']:.1f} ({run.eval['episodes']} episodes)"
    print(msg)
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    from shoal.io.checkpoint import atomic_write_text
    from shoal.run.reload import evaluate_run

    if a.video:  # a bad --video option fails before the evaluation, not after it
        from shoal.run.video import check_video_options

        check_video_options(a.video, a.video_episodes, 1 if a.video_frames is None else a.video_frames)
    result = evaluate_run(Path(a.run_dir), a.episodes, a.seed)
    text = json.dumps(result, indent=2)
    if a.out:
        atomic_write_text(Path(a.out), text)
    print(f"mean return {result['mean_return']:.2f} +- {result['std_return']:.2f} over {result['episodes']} episodes "
          f"(checkpoint at {result['env_steps']:,} env steps)")
    if a.video:
        from shoal.run.video import record_run_video

        video = record_run_video(Path(a.run_dir), Path(a.video), a.video_episodes, a.seed, a.video_frames)
        print(f"wrote {video.path}: {len(video.lengths)} episode(s), {video.frames} frames at {video.fps} fps")
    return 0


def _cmd_export(a: argparse.Namespace) -> int:
    from shoal.run.export import export_run

    print(f"wrote {export_run(Path(a.run_dir), a.format, a.out)}")
    return 0


def _cmd_plot(a: argparse.Namespace) -> int:
    from shoal.run.commands import cmd_plot
    from shoal.run.plots import plot_runs

    if (done := cmd_plot(a)) is not None:  # experiment folders among the paths
        return done
    out = plot_runs([Path(d) for d in a.run_dirs], Path(a.out), a.x, a.y, a.title, a.ymin, a.ymax)
    print(f"wrote {out}")
    return 0


def _cmd_play(a: argparse.Namespace) -> int:
    from shoal.run.play import engine, human, load_player

    builder, player, _ = load_player(Path(a.run_dir), a.game, a.simulations, a.untrained)
    if a.engine:
        return engine(builder, player, sys.stdin, sys.stdout)
    return human(builder, player, a.side, sys.stdin, sys.stdout)


def _cmd_list(a: argparse.Namespace) -> int:
    from shoal.agents.registry import ALGORITHMS
    from shoal.backends import BACKENDS
    from shoal.topologies import TOPOLOGIES

    def fits(algo: str, topology: str) -> bool:
        from shoal.envs import env_spec
        from shoal.topologies import misfit

        spec = ALGORITHMS[algo]  # fitting depends on the algorithm's settings; any env it accepts will do
        for probe in ("CartPole-v1", "Pendulum-v1", "FrozenLake-v1"):
            try:
                builder = spec.builder_cls()(spec.config_cls()(), env_spec(probe))
            except ShoalError:
                continue
            return misfit(topology, builder) is None
        return False

    print("algorithms:")
    for name, spec in sorted(ALGORITHMS.items()):
        print(f"  {name:<14} {spec.summary}")
    names = list(TOPOLOGIES)
    print("\nalgorithm x topology, with each algorithm's default settings (D: its default topology, +: fits, "
          ".: does not fit):")
    print("  " + " " * 14 + " ".join(f"{t:>7}" for t in names))
    for name, spec in sorted(ALGORITHMS.items()):
        cells = ["D" if t == spec.topology else ("+" if fits(name, t) else ".") for t in names]
        print(f"  {name:<14}" + " ".join(f"{c:>7}" for c in cells))
    print("\nbackends:   " + ", ".join(BACKENDS))
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line as ``main`` does, without running it (argparse exits 2 on a bad one)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # key=value settings may come before or after options; anything else unknown is an error.
    bad = [x for x in extra if x.startswith("-") or "=" not in x or args.cmd not in ("train", "tune")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if args.cmd == "train":
        overrides = list(args.overrides) + extra
        if args.algo and "=" in args.algo:
            # `train --resume DIR lr=1e-3`: argparse hands the first key=value to the optional algorithm.
            overrides.insert(0, args.algo)
            args.algo = None
        args.overrides = overrides
        seeds = args.seeds or []
        args.overrides += [x for x in seeds if "=" in x]  # `--seeds 0 1 lr=1e-3`: settings after the seeds
        if args.seeds is not None:
            try:
                args.seeds = [int(x) for x in seeds if "=" not in x]
            except ValueError:
                parser.error(f"--seeds takes integers, got {' '.join(seeds)}")
    if args.cmd == "tune":
        args.overrides = list(args.overrides) + extra
    return args


def _cwd_importable() -> None:
    """Let ``--env mypkg.envs:MyEnv-v0`` import ``mypkg`` from the current folder, as ``python -m`` would."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)  # last: never shadows an installed package


def _one_line_warnings() -> Any:
    """shoal's own warnings (:class:`ShoalWarning`) print as one ``shoal: warning:`` line; returns the old formatter."""
    import warnings

    from shoal.errors import ShoalWarning

    default = warnings.formatwarning

    def fmt(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
        if issubclass(category, ShoalWarning):
            return f"shoal: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = fmt
    return default


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one line and exit 2, no traceback."""
    args = parse_args(argv)
    if args.cmd in ("train", "eval", "bench", "tune"):
        _cwd_importable()
    from shoal.run.commands import cmd_record, cmd_report, cmd_tune

    handlers = {"train": _cmd_train, "eval": _cmd_eval, "plot": _cmd_plot, "list": _cmd_list, "play": _cmd_play,
                "tune": cmd_tune, "report": cmd_report, "export": _cmd_export,
                "record": cmd_record}
    import warnings

    default_format = _one_line_warnings()
    try:
        if args.cmd == "bench":
            from shoal.bench.cli import run_bench

            return run_bench(args)
        return handlers[args.cmd](args)
    except ShoalError as e:
        print(f"shoal: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shoal: interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = default_format


if __name__ == "__main__":
    sys.exit(main())
