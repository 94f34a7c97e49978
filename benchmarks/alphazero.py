"""AlphaZero figures: self-play throughput per backend, and engine strength through ``shoal play --engine``.

    python benchmarks/alphazero.py throughput [--game connect4] [--actors 4] [--seconds 30] [--backends inprocess,threaded,ray]
        self-play games/s, positions/s and leaf evaluations per network call on each backend
    python benchmarks/alphazero.py strength --run-dir DIR [--opponent solver|minimax|random] [--games 100]
                                            [--baseline-simulations 1000] [--simulations N] [--untrained]
        the engine (a ``shoal play GAME --run-dir DIR --engine`` subprocess, at the run's recorded
        search size unless --simulations) against a baseline, colours alternated
    python benchmarks/alphazero.py curve --run-dir DIR [--opponent solver] [--games 40] [--out curve.png]
        score of every kept checkpoint against a baseline (the learning curve)
    python benchmarks/alphazero.py curve --run-dir DIR --from-metrics [--out curve.png]
        the same from the evaluations the run logged (``eval_every``), against every baseline, with
        the untrained network evaluated the same way at 0 moves

    python benchmarks/alphazero.py compare [--game tictactoe] [--steps 6000] [--games 50] [--out-dir runs/compare]
        AlphaGo's separate networks against AlphaGo Zero's dual one, each with a plain and a residual
        torso: the same training budget for each, then the engine's scores (and, for tic-tac-toe,
        its losing lines against every line of optimal play)

Training runs themselves are ``shoal train alphazero --env GAME``; docs/alphazero.md lists the
commands behind each published figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shoal.agents.alphazero.baseline import MCTSSolver  # noqa: E402
from shoal.agents.alphazero.minimax import MinimaxPlayer  # noqa: E402
from shoal.agents.alphazero.player import RandomPlayer, match  # noqa: E402
from shoal.envs.games import make_game  # noqa: E402


def throughput(game: str, actors: int, seconds: float, backends: list[str], simulations: int) -> list[dict[str, float]]:
    """Self-play for ``seconds`` on each backend (no learning), with ``actors`` actors."""
    from shoal.agents.alphazero.config import AlphaZeroConfig
    from shoal.backends import make_backend
    from shoal.config import to_dict
    from shoal.settings import RunConfig
    from shoal.topologies.alphazero import AlphaZeroProgram, AlphaZeroSettings, GameContext

    cfg = AlphaZeroConfig(simulations=simulations, min_replay=10_000, buffer_size=200_000)  # min_replay: measure self-play only
    out = []
    for name in backends:
        backend = make_backend(name, num_cpus=actors + 3)
        prog = AlphaZeroProgram(GameContext(to_dict(cfg), game, 0), RunConfig(steps=10**9, num_actors=actors), backend,
                                AlphaZeroSettings(moves_per_call=32))
        try:
            prog.run_iteration()  # warm-up: node start, first calls
            t0, positions, games = time.perf_counter(), 0, 0
            while time.perf_counter() - t0 < seconds:
                rep = prog.run_iteration()
                positions += rep.env_steps
                games += len(rep.episode_returns)
            dt = time.perf_counter() - t0
            ev = prog.backend.get(prog.evaluator.call("metrics"))
            row = {"backend": name, "actors": actors, "seconds": round(dt, 1), "games_per_s": games / dt,
                   "positions_per_s": positions / dt, "leaves_per_network_call": ev["leaves_per_network_call"]}
            if "inference_requests_mean" in ev:
                row["actor_requests_per_network_call"] = ev["inference_requests_mean"]
            out.append(row)
        finally:
            prog.close()
    return out


def _opponent(kind: str, game: str, sims: int, seed: int):
    if kind == "solver":
        return MCTSSolver(sims, seed=seed)
    if kind == "minimax":
        if game != "tictactoe":
            raise SystemExit("the minimax opponent is exact for tictactoe only")
        return MinimaxPlayer(seed)
    return RandomPlayer(seed)


def strength(run_dir: Path, opponent: str, games: int, baseline_sims: int, simulations: int | None, untrained: bool,
             seed: int) -> dict[str, float]:
    """The engine subprocess against a baseline."""
    import yaml

    from shoal.run.play import EngineProcess

    game = yaml.safe_load((run_dir / "config.yaml").read_text())["env"]
    eng = EngineProcess(game, run_dir, simulations, untrained)
    try:
        t0 = time.perf_counter()
        res = match(lambda: make_game(game), eng, _opponent(opponent, game, baseline_sims, seed), games)
        res["seconds"] = time.perf_counter() - t0
    finally:
        eng.close()
    return {"game": game, "opponent": opponent, "baseline_simulations": baseline_sims, "untrained": untrained,
            "simulations": simulations or "run default", **res}


def curve(run_dir: Path, opponent: str, games: int, baseline_sims: int, seed: int, out: Path | None) -> list[dict[str, float]]:
    """Score of each checkpoint of the run (the engine in this process, at the run's search size)."""
    import yaml

    from shoal.agents.alphazero.builder import AlphaZeroBuilder
    from shoal.agents.alphazero.config import AlphaZeroConfig
    from shoal.config import build
    from shoal.io.checkpoint import load_checkpoint
    from shoal.topologies.alphazero import GameContext

    doc = yaml.safe_load((run_dir / "config.yaml").read_text())
    ctx = GameContext(doc["agent"], doc["env"], int(doc["run"]["seed"]))
    builder = AlphaZeroBuilder(build(AlphaZeroConfig, doc["agent"]), doc["env"])
    rows = []
    points: list[Path | None] = [None, *sorted((run_dir / "checkpoints").glob("ckpt-*.json"))]  # None: the initial network
    for path in points:
        net = ctx.initial_network()
        if path is not None:
            tree, meta = load_checkpoint(path, detached=False)
            learner = tree["program"]["learner"]
            net.load_state_dict(learner["best"] if doc["agent"].get("gate") else learner["net"])
            steps = int(meta["env_steps"])
        else:
            steps = 0
        res = match(builder.new_game, builder.make_player(net), _opponent(opponent, doc["env"], baseline_sims, seed), games)
        rows.append({"env_steps": steps, **res})
        print(json.dumps(rows[-1]), flush=True)
    if out is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["env_steps"] for r in rows], [r["score"] for r in rows], marker="o")
        ax.set_xlabel("self-play moves")
        ax.set_ylabel(f"score vs {opponent}" + (f" ({baseline_sims} sims)" if opponent == "solver" else ""))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.set_title(f"alphazero {doc['env']}")
        fig.tight_layout()
        fig.savefig(out, dpi=120)
    return rows


def curve_from_metrics(run_dir: Path, out: Path | None) -> list[dict[str, float]]:
    """The scores the run's periodic evaluations logged in metrics.csv, against each baseline."""
    import csv

    import yaml

    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("eval_return_mean")]
    names = sorted({k for r in rows for k in r if k.startswith("eval_score_") and r[k]})
    table = [{"env_steps": float(r["env_steps"]), "wall_time_s": float(r["wall_time_s"]),
              **{n.removeprefix("eval_score_"): float(r[n]) for n in names if r.get(n)}} for r in rows]
    doc = yaml.safe_load((run_dir / "config.yaml").read_text())
    # The untrained network under the same conditions, at x = 0 (what the run's evaluations would have said).
    from shoal.core.seeding import derive_seed
    from shoal.run.alphazero import evaluate_engine
    from shoal.topologies.alphazero import GameContext

    ctx = GameContext(doc["agent"], doc["env"], int(doc["run"]["seed"]))
    agent = doc["agent"]
    init = evaluate_engine(ctx.builder(), ctx.initial_network(), agent["eval_simulations"] or agent["simulations"],
                           agent["eval_games"], agent["baseline_simulations"], derive_seed(int(doc["run"]["seed"]), "eval"))
    table.insert(0, {"env_steps": 0.0, "wall_time_s": 0.0, **{k: v["score"] for k, v in init["baselines"].items()}})
    for t in table:
        print(json.dumps(t))
    if out is not None and table:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for n in names:
            key = n.removeprefix("eval_score_")
            ax.plot([t["env_steps"] for t in table], [t[key] for t in table], marker="o", label=f"vs {key}")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("self-play moves")
        ax.set_ylabel("score (wins + draws/2)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"alphazero {doc['env']}: engine at {doc['agent']['eval_simulations'] or doc['agent']['simulations']} "
                     "simulations per move")
        fig.tight_layout()
        fig.savefig(out, dpi=120)
    return table


def compare(game: str, steps: int, games: int, baseline_sims: int, out_dir: Path, seed: int) -> list[dict[str, object]]:
    """sep/dual x conv/res with the game's defaults and ``steps`` self-play moves each."""
    import shoal
    from shoal.agents.alphazero.minimax import losing_lines
    from shoal.run.alphazero import evaluate_engine, load_engine_network

    rows: list[dict[str, object]] = []
    for dual in (False, True):
        for torso in ("conv", "res"):
            name = f"{'dual' if dual else 'sep'}-{torso}"
            d = out_dir / f"{game}-{name}-s{seed}"
            t0 = time.perf_counter()
            shoal.train("alphazero", env=game, steps=steps, seed=seed, run_dir=d, tensorboard=False,
                        overrides={"dual": dual, "torso": torso, "eval_games": 0})
            train_s = time.perf_counter() - t0
            builder, net, _ = load_engine_network(d)
            res = evaluate_engine(builder, net, builder.config.engine_simulations, games, baseline_sims, seed)
            row: dict[str, object] = {"network": name, "train_s": round(train_s, 1),
                                      **{f"score_{k}": v["score"] for k, v in res["baselines"].items()}}
            if game == "tictactoe":
                lost = losing_lines(builder.make_player(net), builder.new_game)
                row["losing_lines_first"], row["losing_lines_second"] = len(lost["first"]), len(lost["second"])
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--game", default="connect4")
    t.add_argument("--actors", type=int, default=4)
    t.add_argument("--seconds", type=float, default=30.0)
    t.add_argument("--simulations", type=int, default=100)
    t.add_argument("--backends", default="inprocess,threaded,ray")
    m = sub.add_parser("compare")
    m.add_argument("--game", default="tictactoe")
    m.add_argument("--steps", type=int, default=6000)
    m.add_argument("--games", type=int, default=50)
    m.add_argument("--baseline-simulations", type=int, default=200)
    m.add_argument("--out-dir", type=Path, default=Path("runs/compare"))
    m.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("strength")
    c = sub.add_parser("curve")
    for q in (s, c):
        q.add_argument("--run-dir", type=Path, required=True)
        q.add_argument("--opponent", choices=["solver", "minimax", "random"], default="solver")
        q.add_argument("--games", type=int, default=100)
        q.add_argument("--baseline-simulations", type=int, default=1000)
        q.add_argument("--seed", type=int, default=0)
    s.add_argument("--simulations", type=int)
    s.add_argument("--untrained", action="store_true")
    c.add_argument("--out", type=Path)
    c.add_argument("--from-metrics", action="store_true", help="plot the run's logged evaluations instead of replaying checkpoints")
    a = p.parse_args()
    if a.cmd == "throughput":
        for row in throughput(a.game, a.actors, a.seconds, a.backends.split(","), a.simulations):
            print(json.dumps(row))
    elif a.cmd == "compare":
        compare(a.game, a.steps, a.games, a.baseline_simulations, a.out_dir, a.seed)
    elif a.cmd == "strength":
        print(json.dumps(strength(a.run_dir, a.opponent, a.games, a.baseline_simulations, a.simulations, a.untrained, a.seed)))
    elif a.from_metrics:
        curve_from_metrics(a.run_dir, a.out)
    else:
        curve(a.run_dir, a.opponent, a.games, a.baseline_simulations, a.seed, a.out)


if __name__ == "__main__":
    main()
