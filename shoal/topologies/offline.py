"""The ``offline`` topology: one learner node stepping on dataset batches, no actors, no env.

Each iteration asks the learner node for ``updates_per_iteration`` updates (fewer at the
budget's end) and reports them as the iteration's steps, so the runner's step counter,
logging, evaluation (``eval_every``), checkpoints and final ``eval.json`` all count
learner updates. A learner that stops early (behaviour cloning's early stopping reports
``converged``) ends the run: the iteration then reports the rest of the budget at once,
and the ``updates`` metric says how many updates were really taken.
"""

from __future__ import annotations

from typing import Any

from shoal.backends.base import Backend
from shoal.settings import RunConfig
from shoal.topologies import IterationReport, Program
from shoal.topologies.learners import learner_gpus
from shoal.topologies.nodes import LearnerNode, NodeContext


class OfflineProgram(Program):
    """A learner node and its dataset; evaluation is the runner's, on the env the dataset names."""

    def __init__(self, ctx: NodeContext, run: RunConfig, backend: Backend) -> None:
        self.ctx, self.backend = ctx, backend
        self.builder = ctx.builder()
        self.learner = backend.spawn(LearnerNode, ctx, name="learner", num_gpus=learner_gpus(ctx.device))
        self.total = run.steps
        self.steps = 0  # steps reported to the runner (updates, plus the skipped rest after an early stop)
        self.updates = 0  # updates taken
        self._eval_net = self.builder.make_networks()
        self.env_seeds: list[int] = []
        self.actor_seeds: list[int] = []

    def run_iteration(self) -> IterationReport:
        n = max(1, min(self.builder.steps_per_iteration, self.total - self.steps))
        metrics = dict(self.backend.get(self.learner.call("learn", self.steps + n)))
        converged = metrics.get("converged", 0.0) > 0
        self.updates += n if not converged else min(n, round(n * (1.0 - metrics["converged"])) + 1)
        self.steps += n
        if converged and self.steps < self.total:  # stopped early: the rest of the budget is not spent
            n += self.total - self.steps
            self.steps = self.total
        metrics["updates"] = float(self.updates)
        return IterationReport(n, [], [], metrics)

    def state(self) -> dict[str, Any]:
        node = self.backend.get(self.learner.call("state"))
        return {"learner": node["learner"], "learner_node": {k: v for k, v in node.items() if k != "learner"},
                "steps": self.steps, "updates": self.updates}

    def load_state(self, state: dict[str, Any]) -> None:
        node_state = dict(state["learner_node"])
        node_state["learner"] = state["learner"]
        self.backend.get(self.learner.call("load_state", node_state))
        self.steps, self.updates = int(state["steps"]), int(state["updates"])


def misfit(builder: Any) -> str | None:
    """Only the offline algorithms (bc, cql, offline_dqn, offline_sac) run here."""
    if not builder.offline:
        return "the offline topology trains the offline algorithms (bc, cql, offline_dqn, offline_sac) from a dataset"
    return None


def make_program(ctx: NodeContext, run: RunConfig, backend: Backend, settings: Any = None) -> OfflineProgram:
    """Build the offline topology."""
    return OfflineProgram(ctx, run, backend)
