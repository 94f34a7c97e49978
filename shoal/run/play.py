"""``shoal play``: a person against a trained AlphaZero run, or the run as an engine for other programs.

Engine protocol (``--engine``): every line read on stdin is a move history from the start
position (space-separated action indices; an empty line is the start position). The engine
answers each with one line: the action it picks, searched afresh with no noise at
temperature 0 (so the same line always gets the same answer), or ``error: ...`` for a
history that is not a legal, unfinished game. It exits at the end of its input.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from shoal.envs.games import Game, IllegalMoveError, game_name
from shoal.errors import ConfigError, ShoalError


def load_player(run_dir: Path, game: str, simulations: int | None, untrained: bool = False) -> tuple[Any, Any, int]:
    """``(builder, player, simulations)`` for a run: its newest network, or its initial one with ``untrained``."""
    from shoal.run.alphazero import load_engine_network
    from shoal.topologies.alphazero import GameContext

    builder, net, doc = load_engine_network(run_dir)
    if game_name(game) != game_name(doc["env"]):
        raise ConfigError(f"{run_dir} was trained on {doc['env']!r}, not {game!r}; pass {doc['env']} or another run")
    if untrained:
        net = GameContext(doc["agent"], doc["env"], int(doc["run"]["seed"])).initial_network()
    sims = simulations or builder.config.engine_simulations
    if sims < 1:
        raise ConfigError(f"--simulations must be at least 1, got {sims}")
    return builder, builder.make_player(net, sims), sims


def position(builder: Any, line: str) -> Game:
    """The position after the space-separated moves of ``line``; an IllegalMoveError if they are not a game."""
    try:
        moves = [int(x) for x in line.split()]
    except ValueError:
        raise IllegalMoveError(f"the history {line.strip()!r} is not space-separated action numbers") from None
    game = builder.new_game()
    game.play_all(moves)
    if game.is_terminal():
        raise IllegalMoveError(f"the game after {line.strip()!r} is over; there is no move to pick")
    return game


def engine(builder: Any, player: Any, stdin: IO[str], stdout: IO[str]) -> int:
    """Answer move-history lines with moves until end of input."""
    for line in stdin:
        try:
            game = position(builder, line)
            answer = str(player.select_action(game))
        except IllegalMoveError as e:
            answer = f"error: {e}"
        stdout.write(answer + "\n")
        stdout.flush()
    return 0


def human(builder: Any, player: Any, side: str, stdin: IO[str], stdout: IO[str]) -> int:
    """A game in the terminal: the board is drawn, moves are typed, illegal ones refused."""
    game = builder.new_game()
    me = 1 if side == "first" else -1
    out = stdout.write
    out(f"You play {'X (first)' if me == 1 else 'O (second)'}; type a move number, or q to quit.\n")
    while not game.is_terminal():
        out(game.render() + "\n")
        if game.to_play == me:
            legal = " ".join(map(str, game.legal_actions()))
            out(f"your move ({legal}): ")
            stdout.flush()
            text = stdin.readline()
            if not text or text.strip().lower() in ("q", "quit", "exit"):
                out("\nbye\n")
                return 0
            try:
                game.play(int(text.strip()))
            except ValueError:
                out(f"{text.strip()!r} is not a move number; type one of: {legal}\n")
            except IllegalMoveError as e:
                out(f"{e}\n")
        else:
            a = player.select_action(game)
            out(f"engine plays {a}\n")
            game.play(a)
    out(game.render() + "\n")
    out("draw\n" if game.winner == 0 else ("you win\n" if game.winner == me else "the engine wins\n"))
    return 0


class EngineProcess:
    """A player backed by a ``shoal play GAME --run-dir DIR --engine`` subprocess (what arenas use)."""

    def __init__(self, game: str, run_dir: Path | str, simulations: int | None = None, untrained: bool = False,
                 timeout: float = 120.0) -> None:
        cmd = [sys.executable, "-m", "shoal.cli", "play", game, "--run-dir", str(run_dir), "--engine"]
        if simulations:
            cmd += ["--simulations", str(simulations)]
        if untrained:
            cmd.append("--untrained")
        self.timeout = timeout
        import os

        import shoal

        # The engine runs the same shoal as this process, wherever it was imported from.
        env = dict(os.environ)
        root = str(Path(shoal.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)

    def ask(self, history: list[int]) -> str:
        """The engine's answer line to a move history."""
        import select

        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(" ".join(map(str, history)) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not ready:
            self.close()
            raise ShoalError(f"the engine gave no answer within {self.timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise ShoalError(f"the engine exited (code {self.proc.poll()}) instead of answering")
        return line.strip()

    def select_action(self, game: Game) -> int:
        answer = self.ask(game.history)
        try:
            return int(answer)
        except ValueError:
            raise ShoalError(f"the engine answered {answer!r} to {game.history}") from None

    def close(self) -> int | None:
        """Close its input and wait for it to exit; its exit code."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=30)
