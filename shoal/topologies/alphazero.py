"""The ``alphazero`` topology: self-play actors, a batched evaluator, a learner with the replay table.

```
 self-play actor 1..N --evaluate(leaves)--> evaluator (inference service) --pull--> variable server
        |                                                                                ^
        +--insert(planes, pi, z)--> learner (replay table, CE + MSE + L2) --publish-----+
```
Each actor plays several games at once and sends the leaves all its trees gathered under
virtual loss as one request; on concurrent backends the evaluator's inference service
merges the requests of all actors into one network call. The learner trains at the
replay ratio and publishes a version after every call (AlphaZero's continuous update), or,
with ``gate=true``, only a candidate that beat the best network in ``gate_games`` games
(AlphaGo Zero's evaluator). On the cooperative in-process backend a round is one call of
each actor and then the learner's due updates, deterministic for a seed.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shoal.agents.alphazero.builder import AlphaZeroBuilder
from shoal.agents.alphazero.config import AlphaZeroConfig
from shoal.agents.alphazero.networks import NetworkEvaluator
from shoal.agents.alphazero.player import SearchPlayer, match
from shoal.backends.base import Backend
from shoal.config import build, positive, require
from shoal.core import nonfinite, store
from shoal.core.seeding import derive_seed, seeded_global_rngs
from shoal.core.threads import set_threads
from shoal.core.types import ActorReport
from shoal.services.inference import InferenceServer
from shoal.services.variables import VariableServer
from shoal.settings import RunConfig
from shoal.topologies import IterationReport
from shoal.topologies.asynchronous import AsyncProgram


@dataclass
class AlphaZeroSettings:
    """The topology's own settings."""

    moves_per_call: int = 64
    """Self-play moves in an actor's call on the in-process backend (and the first call elsewhere)."""
    max_batch: int = 0
    """Most leaves per network call of the evaluator (0: every actor's full request at once)."""
    max_wait_s: float = 0.002
    """Longest a leaf request waits for other actors' requests."""
    pull_every: int = 4
    """Evaluator batches between checks for a newer network version (1 in-process)."""

    def __post_init__(self) -> None:
        positive(self, "moves_per_call", "pull_every")
        require(self.max_batch >= 0 and self.max_wait_s >= 0, "max_batch and max_wait_s must be >= 0")


@dataclass(frozen=True)
class GameContext:
    """What every node needs to rebuild AlphaZero's pieces (picklable)."""

    agent_config: dict[str, Any]
    game: str
    seed: int
    torch_threads: int = 1
    on_nonfinite: str = "skip"
    """A NaN or inf in an update: ``skip`` it or ``stop`` the run (``RunConfig.on_nonfinite``)."""

    def builder(self) -> AlphaZeroBuilder:
        """The run's builder (this process's threads set to ``torch_threads``)."""
        set_threads(self.torch_threads)
        return AlphaZeroBuilder(build(AlphaZeroConfig, self.agent_config), self.game)

    def initial_network(self) -> Any:
        """The run's initial weights (the same in every process)."""
        with seeded_global_rngs(self.seed):
            return self.builder().make_networks()


class EvaluatorNode:
    """Leaf evaluation for every actor with the newest published network; batched across actors when concurrent.

    A request is one float array per leaf: its planes, flattened, then its legal-move mask,
    so that the inference service can concatenate the requests of many actors.
    """

    def __init__(self, ctx: GameContext, variables: Any, settings: AlphaZeroSettings, concurrent: bool, num_actors: int) -> None:
        b = ctx.builder()
        self.net = ctx.initial_network()
        self.evaluate_net = NetworkEvaluator(self.net)
        g = b.game_cls
        self.shape, self.num_actions = (g.num_planes, g.rows, g.cols), g.num_actions
        self.variables, self.pull_every = variables, settings.pull_every if concurrent else 1
        self.version, self.batches, self.leaves = -1, 0, 0
        self._lock = threading.Lock()
        request = b.config.games_per_actor * b.config.leaf_batch
        self.server = (InferenceServer(self._serve, settings.max_batch or num_actors * request, settings.max_wait_s,
                                       name="leaf-evaluator") if concurrent else None)

    def _pull(self) -> None:
        ref = self.variables.call("get_ref", self.version).result()
        if ref is not None:
            snap = store.get(ref[1])
            self.net.load_state_dict(snap.tensors())
            self.version = snap.version

    def _serve(self, packed: np.ndarray, _ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cut = int(np.prod(self.shape))
        return self._run(packed[:, :cut].reshape(-1, *self.shape), packed[:, cut:] > 0.5)

    def _run(self, planes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if self.batches % self.pull_every == 0:
                self._pull()
            self.batches += 1
            self.leaves += len(planes)
            return self.evaluate_net(planes, masks)

    def evaluate(self, actor_id: int, planes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Priors ``[n, A]`` and values ``[n]`` of ``n`` leaves."""
        if self.server is None:
            return self._run(planes, masks)
        packed = np.concatenate([planes.reshape(len(planes), -1), masks.astype(np.float32)], axis=1)
        return self.server.infer(actor_id, packed, timeout=120.0)

    def metrics(self) -> dict[str, float]:
        """The version in use and the leaves per network call."""
        out = {"evaluator_version": float(self.version), "leaves_per_network_call": self.leaves / max(self.batches, 1)}
        if self.server is not None:
            out.update(self.server.metrics())
        return out

    def close(self) -> None:
        """Stop the inference service."""
        if self.server is not None:
            self.server.close()


class SelfPlayNode:
    """Plays self-play games with leaves evaluated by the evaluator node and writes them to the learner's table."""

    def __init__(self, ctx: GameContext, actor_id: int, seed: int, evaluator: Any, learner: Any) -> None:
        self.ctx, self.seed = ctx, seed
        self.player = ctx.builder().make_selfplayer(seed)
        self.actor_id, self.evaluator, self.learner = actor_id, evaluator, learner

    def on_restart(self) -> None:
        """Called by a backend that restarted this node's process: it plays new games, from a seed of its own
        (the constructor ran with the first process's seed), not the first process's games again."""
        self.player = self.ctx.builder().make_selfplayer(derive_seed(self.seed, "process", os.getpid()))

    def _evaluate(self, planes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.evaluator.call("evaluate", self.actor_id, planes, masks).result()

    def run(self, moves: int) -> ActorReport:
        """Play ``moves`` self-play moves (games continue across calls); finished games go to replay."""
        t0 = time.perf_counter()
        res = self.player.play(self._evaluate, min_games=1 << 30, max_moves=moves)
        if res.games:
            self.learner.call("insert", res.items, sum(res.lengths)).result()
        busy = time.perf_counter() - t0
        return ActorReport(res.positions, [float(o) for o in res.outcomes], res.lengths,
                           data={"network_calls": res.network_calls, "leaf_evaluations": res.leaf_evaluations,
                                 "games": res.games, "busy_s": busy}, actor_id=self.actor_id)



class LearnerNode:
    """The learner and its replay table; publishes versions (every call, or only gated winners)."""

    def __init__(self, ctx: GameContext, variables: Any) -> None:
        b = ctx.builder()
        self.builder, self.cfg, self.variables = b, b.config, variables
        self.net = ctx.initial_network()
        self.learner = b.make_learner(self.net, derive_seed(ctx.seed, "replay"))
        nonfinite.configure(self.learner, ctx.on_nonfinite)
        self.best = ctx.initial_network()       # the gate's best network (what self-play uses when gated)
        self.best_version = 0
        self.gate_results: list[dict[str, float]] = []
        self._lock = threading.RLock()
        self._published = -1
        self._publish()

    def _publish(self) -> None:
        net, version = (self.best, self.best_version) if self.cfg.gate else (self.net, self.learner.version)
        if version > self._published:
            sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
            self.variables.call("publish", sd, version).result()
            self._published = version

    def insert(self, items: dict[str, np.ndarray], positions: int) -> int:
        """Add self-play items; returns the table size."""
        with self._lock:
            self.learner.insert(items, positions)
            return len(self.learner.table)

    def train(self, max_updates: int, max_seconds: float = 0.0) -> dict[str, float]:
        """Run the updates the replay ratio allows (at most ``max_updates``, or until ``max_seconds`` when > 0)."""
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        gate: dict[str, float] = {}
        done = 0
        while done < max_updates:
            with self._lock:
                if self.learner.updates_due() <= 0:
                    break
                m = self.learner.step()
                if self.cfg.gate and self.learner.updates % self.cfg.gate_every == 0:
                    gate = self._gate()  # reported as is, not averaged with the losses
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            done += 1
            if max_seconds and time.perf_counter() - t0 > max_seconds:
                break
        if not done and max_seconds:
            time.sleep(min(0.05, max_seconds))  # nothing due yet: let the actors produce
        with self._lock:
            self._publish()
        out = {k: v / done for k, v in sums.items()} if done else {}
        out.update(gate)
        out.update({"learner_updates": float(self.learner.updates), "replay_size": float(len(self.learner.table))})
        return out

    def pretrain(self, data: dict[str, np.ndarray], seed: int) -> dict[str, float]:
        """Supervised policy pretraining on ``data`` (planes, one-hot moves), then publish (and adopt as best)."""
        from shoal.agents.alphazero.pretrain import pretrain_policy

        with self._lock:
            c = self.cfg
            m = pretrain_policy(self.net, data, c.pretrain_epochs, c.batch_size, c.lr, seed)
            self.learner.version += 1
            self.best.load_state_dict(self.net.state_dict())
            self.best_version = self.learner.version
            self._publish()
            return m

    def _gate(self) -> dict[str, float]:
        """AlphaGo Zero's evaluator: the candidate replaces the best network if it scores >= gate_threshold."""
        c = self.cfg
        cand = SearchPlayer(NetworkEvaluator(self.net), c.gate_simulations, c.c_puct, c.leaf_batch, c.virtual_loss)
        best = SearchPlayer(NetworkEvaluator(self.best), c.gate_simulations, c.c_puct, c.leaf_batch, c.virtual_loss)
        res = match(self.builder.new_game, cand, best, c.gate_games)
        accepted = res["score"] >= c.gate_threshold
        if accepted:
            self.best.load_state_dict(self.net.state_dict())
            self.best_version = self.learner.version
        self.gate_results.append({"updates": float(self.learner.updates), "score": res["score"], "accepted": float(accepted)})
        return {"gate_score": res["score"], "gate_accepted": float(accepted)}

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        """The network self-play uses: the best one when gated, else the newest."""
        with self._lock:
            net, version = (self.best, self.best_version) if self.cfg.gate else (self.net, self.learner.version)
            return version, {k: v.detach().clone() for k, v in net.state_dict().items()}

    def state(self) -> dict[str, Any]:
        """The learner's state (network, optimiser, replay, counters), the best network and the gate's history."""
        with self._lock:
            out = self.learner.state()
            out["best"] = {k: v.detach().clone() for k, v in self.best.state_dict().items()}
            out["gate"] = {"best_version": self.best_version, "results": list(self.gate_results)}
            return out

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` and publish the restored network."""
        with self._lock:
            self.learner.load_state(state)
            self.best.load_state_dict(state["best"])
            self.best_version = int(state["gate"]["best_version"])
            self.gate_results = list(state["gate"]["results"])
            self._republish()

    def _republish(self) -> None:
        version, sd = self.get_variables()
        current = self.variables.call("get_ref", -1).result()
        if current is None or version > current[0]:
            self.variables.call("publish", sd, version).result()
        self._published = version


class AlphaZeroProgram(AsyncProgram):
    """Self-play actors, an evaluator, a learner and a variable server."""

    def __init__(self, ctx: GameContext, run: RunConfig, backend: Backend, settings: AlphaZeroSettings | None = None) -> None:
        self.ctx, self.settings = ctx, settings or AlphaZeroSettings()
        self.builder = ctx.builder()
        n = run.num_actors
        self._init_async(backend, n, 1, run.steps, self.settings.moves_per_call, run.max_restarts)
        conc = max(4, 2 * n + 2)
        self.variables = backend.spawn(VariableServer, name="variables", num_cpus=0, concurrency=conc)
        self.learner = backend.spawn(LearnerNode, ctx, self.variables, name="learner",
                                     concurrency=n + 2 if self.concurrent else 1)
        self.evaluator = backend.spawn(EvaluatorNode, ctx, self.variables, self.settings, self.concurrent, n,
                                       name="evaluator", concurrency=n + 2 if self.concurrent else 1)
        self.actor_seeds = [derive_seed(ctx.seed, "selfplay", i) for i in range(n)]
        self.actors = [self._spawn_actor(SelfPlayNode, ctx, i, self.actor_seeds[i], self.evaluator, self.learner,
                                         name=f"selfplay-{i}") for i in range(n)]
        self._eval_net = ctx.initial_network()

    def _start_actor(self, i: int, units: int) -> Any:
        return self.actors[i].call("run", units)

    def _start_learner(self) -> Any:
        return self.learner.call("train", 1_000_000, self.call_seconds)

    def _cooperative_round(self) -> IterationReport:
        remaining = max(1, -(-(self.total_steps - self.env_steps) // len(self.actors)))  # no moves past the budget
        moves = min(self.settings.moves_per_call, remaining)
        reports = self.backend.get([a.call("run", moves) for a in self.actors])
        metrics = self.backend.get(self.learner.call("train", 1_000_000, 0.0))
        return self._report(reports, metrics)

    def _report(self, reports: list[ActorReport], metrics: dict[str, float]) -> IterationReport:
        rep = super()._report(reports, metrics)
        calls = sum(r.data["network_calls"] for r in reports)
        if calls:
            rep.metrics["actor_leaves_per_call"] = sum(r.data["leaf_evaluations"] for r in reports) / calls
        rep.metrics["games"] = float(sum(r.data["games"] for r in reports))
        return rep

    def _extra_metrics(self) -> dict[str, float]:
        return self.backend.get(self.evaluator.call("metrics"))

    def network(self) -> Any:
        """A local copy of the network self-play uses now."""
        _, sd = self.backend.get(self.learner.call("get_variables"))
        self._eval_net.load_state_dict(sd)
        return self._eval_net

    def state(self) -> dict[str, Any]:
        """The learner node's state and the move count; self-play games in progress are not kept (a resumed
        run's actors start new games)."""
        return {"learner": self.backend.get(self.learner.call("state")), "env_steps": self.env_steps}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.backend.get(self.learner.call("load_state", state["learner"]))
        self.env_steps = int(state["env_steps"])


#: The topology's settings (``topology.KEY=VALUE``).
Settings = AlphaZeroSettings


def make_program(ctx: GameContext, run: RunConfig, backend: Backend, settings: AlphaZeroSettings | None = None) -> AlphaZeroProgram:
    """Build the alphazero topology."""
    return AlphaZeroProgram(ctx, run, backend, settings)


#: The one algorithm this topology runs: its nodes may read that algorithm's own settings.
DEDICATED_TO = "alphazero"


def misfit(builder: Any) -> str | None:
    """Only AlphaZero's builder fits: the nodes play board games."""
    return None if isinstance(builder, AlphaZeroBuilder) else "it plays two-player board games with search; use alphazero"
