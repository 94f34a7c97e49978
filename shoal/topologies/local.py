"""The ``local`` topology: N actor nodes, one learner node, synchronous rounds.

Each round the learner's versioned parameters go to every actor, the actors step
their vector envs in parallel (on Ray) or in turn (in-process), and their data goes
to the learner: straight into the update for on-policy algorithms, into the
learner's replay table for off-policy ones. An actor node whose process died (on Ray) is
restarted and runs its part of the round again (see :mod:`shoal.topologies.restarts`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from shoal.backends.base import Backend, DataLost, NodeDied
from shoal.core.seeding import derive_seed
from shoal.settings import RunConfig
from shoal.topologies import IterationReport, Program
from shoal.topologies.learners import LearnerGroup, LearnerRankNode, spawn_learners
from shoal.topologies.nodes import ActorNode, LearnerNode, NodeContext
from shoal.topologies.restarts import ActorRestarts, not_restarted

_log = logging.getLogger("shoal")


class LocalProgram(Program):
    """Synchronous actor/learner rounds on any backend."""

    LOST_ROUNDS = 3
    """Rounds in a row whose data may be lost with a Ray node (:class:`DataLost`) before the run stops."""

    def __init__(self, ctx: NodeContext, run: RunConfig, backend: Backend) -> None:
        self.ctx = ctx
        self.backend = backend
        self.builder = ctx.builder()
        # The learner alone gets the GPU (actors act on the CPU); on Ray this is what makes one visible to it.
        # With num_learners > 1 it is a group of ranks averaging gradients, rank 0 answering for all.
        self.learner = spawn_learners(backend, LearnerRankNode, ctx, run.num_learners, single=LearnerNode)
        self.env_seeds = [derive_seed(run.seed, "env", i) for i in range(run.num_actors)]
        self.actor_seeds = [derive_seed(run.seed, "actor", i) for i in range(run.num_actors)]
        self.restarts = ActorRestarts(run.num_actors, run.max_restarts)
        self.actors = [
            self.restarts.spawn(backend, ActorNode, ctx, i, run.num_actors, self.env_seeds[i], self.actor_seeds[i],
                                name=f"actor-{i}")
            for i in range(run.num_actors)
        ]
        self.steps_per_actor = self.builder.steps_per_iteration
        self.env_steps = 0
        self._eval_net = self.builder.make_networks()

    def run_iteration(self) -> IterationReport:
        variables = self.learner.call("get_variables")
        reports: list[Any] = []  # every attempt's: the env steps and episodes of a lost round happened too
        for attempt in range(self.LOST_ROUNDS + 1):
            # An actor that died between rounds (seen by a checkpoint) takes on its last checkpointed state now.
            outs = [a.call("run", self.steps_per_actor, variables,
                           self.restarts.last_states.get(i) if i in self.restarts.recovering else None, num_returns=2)
                    for i, a in enumerate(self.actors)]
            try:
                round_reports = [self._report_of(i, outs, variables) for i in range(len(self.actors))]
                reports.extend(round_reports)
                self.env_steps += sum(r.env_steps for r in round_reports)
                metrics = self.backend.get(self.learner.call("learn", self.env_steps, *[o[1] for o in outs]))
                break
            except NodeDied as e:
                raise not_restarted(e) from None
            except DataLost as e:
                # A round's data was lost with the Ray node whose object store held it (its actors come back
                # elsewhere): the learner never saw it, so the actors run the round again. A learner group has
                # stopped its ranks by then (one rank failed), so there the run stops with this error.
                if attempt == self.LOST_ROUNDS or isinstance(self.learner, LearnerGroup):
                    raise
                _log.warning("the data of a round was lost before node %s read it (its Ray node or owner is gone); "
                             "the actors run the round again", e.node or "learner")
        steps = sum(r.env_steps for r in reports)
        returns = [x for r in reports for x in r.episode_returns]
        lengths = [x for r in reports for x in r.episode_lengths]
        # Envs made anew inside the actor nodes (a crash, a hang, a NaN): each reports its count so far in its
        # process, so the round that reached the learner has the newest counts.
        metrics = {**metrics, "env_restarts": float(sum(r.data.get("env_restarts_total", 0.0) for r in round_reports
                                                        if isinstance(r.data, dict)))}
        metrics["actor_restarts"] = float(self.restarts.total)
        return IterationReport(steps, returns, lengths, metrics)

    def _report_of(self, i: int, outs: list[Any], variables: Any) -> Any:
        """Actor ``i``'s report of this round; if its process died (the backend restarts it), its round
        again in the new process, which replaces ``outs[i]``."""
        while True:
            try:
                report = self.backend.get(outs[i][0])
                self.restarts.recovered(i)
                return report
            except NodeDied as e:
                self.restarts.died(i, e, self.actors[i])
            time.sleep(max(0.0, self.restarts.not_before[i] - time.monotonic()))
            # A cheap call first: the node is back once it answers, however long its round then takes.
            alive = self.actors[i].call("alive")
            # the new process takes on the dead one's checkpointed counters first, in the same call
            outs[i] = self.actors[i].call("run", self.steps_per_actor, variables, self.restarts.last_states.get(i),
                                          num_returns=2)
            ready, _ = self.backend.wait([alive], timeout=self.restarts.timeout_s)
            if not ready:  # a node Ray cannot place again never answers nor fails
                self.restarts.check_overdue(time.monotonic())
                continue
            try:
                self.backend.get(alive)
                self.restarts.recovered(i)  # back: its round may take as long as rounds take
            except NodeDied:
                pass  # still restarting: the round's call fails the same way, and the loop sees it

    def state(self) -> dict[str, Any]:
        learner_state = self.backend.get(self.learner.call("state"))
        refs = [a.call("state") for a in self.actors]
        actor_states = [self._state_of(i, ref) for i, ref in enumerate(refs)]
        self.restarts.remember(actor_states)
        return {"learner": learner_state["learner"], "learner_node": {k: v for k, v in learner_state.items() if k != "learner"},
                "actors": actor_states, "env_steps": self.env_steps}

    def _state_of(self, i: int, ref: Any) -> Any:
        """Actor ``i``'s node state for a checkpoint. If its process died between rounds, the death is counted and
        the checkpoint keeps the state the restarted node takes on in its next round (its last checkpointed one),
        or, with none yet, the new process's own."""
        while True:
            try:
                state = self.backend.get(ref)
                self.restarts.recovered(i)
                return state
            except NodeDied as e:
                self.restarts.died(i, e, self.actors[i])
            if i in self.restarts.last_states:
                return self.restarts.last_states[i]
            time.sleep(max(0.0, self.restarts.not_before[i] - time.monotonic()))
            ref = self.actors[i].call("state")
            ready, _ = self.backend.wait([ref], timeout=self.restarts.timeout_s)
            if not ready:
                self.restarts.check_overdue(time.monotonic())

    def load_state(self, state: dict[str, Any]) -> None:
        node_state = dict(state["learner_node"])
        node_state["learner"] = state["learner"]
        self.backend.get(self.learner.call("load_state", node_state))
        if len(state["actors"]) == len(self.actors):
            self.backend.get([a.call("load_state", s) for a, s in zip(self.actors, state["actors"])])
            self.restarts.remember(list(state["actors"]))
        self.env_steps = int(state["env_steps"])

    def close(self) -> None:
        if isinstance(self.learner, LearnerGroup):
            self.learner.close()
        super().close()


#: ``num_learners > 1`` places a learner group (see :mod:`shoal.topologies.learners`).
MULTI_LEARNER = True


def make_program(ctx: NodeContext, run: RunConfig, backend: Backend, settings: Any = None) -> LocalProgram:
    """Build the local topology."""
    return LocalProgram(ctx, run, backend)
