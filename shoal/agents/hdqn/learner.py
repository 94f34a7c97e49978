"""The h-DQN learner: two DQN learners, each on its own replay table, fed by one hand-over.

Each call of :meth:`HDQNLearner.step` is one hand-over of the actors' data (the builder
asks for one per round): the controller's transitions go to the controller's table, the
meta-controller's to the meta table, and then each level takes the DQN updates its
schedule owes (``gradient_steps`` per ``train_freq`` env steps from ``learning_starts``,
env steps counted as controller transitions received). A level whose table cannot yet
fill a batch (the meta table fills slowly: one item per goal) lets its owed updates pass
instead of catching up in a burst later.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoal.agents.dqn.learner import DQNLearner
from shoal.agents.hdqn.config import HDQNConfig
from shoal.agents.hdqn.networks import HDQNNetworks
from shoal.agents.replay_builder import train_freq_steps_due
from shoal.core.interfaces import Learner, Table

LEVELS = ("meta", "controller")


class HDQNLearner(Learner):
    """Updates the meta-controller and the controller, each a :class:`DQNLearner` with its own table."""

    def __init__(self, nets: HDQNNetworks, cfg: HDQNConfig, meta: DQNLearner, controller: DQNLearner,
                 tables: dict[str, Table]) -> None:
        self.nets, self.cfg = nets, cfg
        self.levels = {"meta": meta, "controller": controller}
        self.tables = tables
        self.env_steps = 0  # controller transitions received: one per env step
        self.slots = {k: 0 for k in LEVELS}  # update slots of each level's schedule used (taken or let pass)
        self.version = 0

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        # Copies: the caller may hold them, labelled with this version, while later steps update the weights in place.
        return self.version, {k: v.detach().to("cpu", copy=True) for k, v in self.nets.state_dict().items()}

    def step(self, data: Any = None) -> dict[str, float]:
        """Insert one hand-over of actor data (a list of drained dicts) and run both levels' owed updates."""
        attempts = successes = 0
        for d in data if isinstance(data, list) else [data]:
            if d is None:
                continue
            for level in LEVELS:
                items = d.get(level)
                if items is not None and len(items["reward"]):
                    self.tables[level].insert(items)
            if d.get("controller") is not None:
                self.env_steps += len(d["controller"]["reward"])
            attempts += int(np.sum(d.get("goal_attempts", 0)))
            successes += int(np.sum(d.get("goal_successes", 0)))
        metrics: dict[str, float] = {}
        updated = False
        for level in LEVELS:
            due = train_freq_steps_due(self.cfg, self.env_steps, self.slots[level])
            self.slots[level] += due
            if due == 0 or not self.tables[level].can_sample(self.cfg.batch_size):
                continue
            totals: dict[str, float] = {}
            updated = True
            for _ in range(due):
                for k, v in self.levels[level].step().items():
                    totals[k] = totals.get(k, 0.0) + float(v)
            metrics.update({f"{level}_{k}": v / due for k, v in totals.items()})
        if attempts:
            metrics["goal_success_frac"] = successes / attempts
        if updated:  # a new version only when some parameters changed: actors pull nothing new otherwise
            self.version += 1
        return metrics

    def state(self) -> dict[str, Any]:
        """Both networks (``networks``), each level's target network, optimiser and step count, the replay tables."""
        from shoal.io.checkpoint import Detachable

        levels = {k: {f: v for f, v in learner.state().items() if f != "networks"} for k, learner in self.levels.items()}
        out: dict[str, Any] = {"networks": self.nets.state_dict(), "levels": levels, "env_steps": self.env_steps,
                               "slots": dict(self.slots), "version": self.version}
        if self.cfg.checkpoint_replay:
            out["tables"] = Detachable({k: t.state() for k, t in self.tables.items()})  # kept with the newest checkpoint only
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["networks"])
        for k, learner in self.levels.items():
            own = getattr(self.nets, k).state_dict()
            learner.load_state({**state["levels"][k], "networks": own})
        self.env_steps = int(state["env_steps"])
        self.slots = {k: int(state["slots"][k]) for k in LEVELS}
        self.version = int(state["version"])
        for k, t in self.tables.items():
            if state.get("tables") and k in state["tables"]:
                t.load_state(state["tables"][k])
