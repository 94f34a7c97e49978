"""The tabular actor (epsilon-greedy over its copy of the Q-table) and the evaluation policies."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoal.agents.exploration import epsilon_greedy
from shoal.agents.tabular.config import TabularConfig
from shoal.agents.tabular.networks import QTable
from shoal.core.interfaces import Actor
from shoal.core.schedules import schedule
from shoal.core.types import StepResult


class TabularActor(Actor):
    """Acts epsilon-greedily and hands the learner its transitions ``[T, B]`` in order.

    Each transition is ``(s, a, r, s', a', terminated, truncated, first)`` where ``s'``
    is the episode's final observation when it ended, ``first`` marks the first step of
    an episode (the learner resets traces there) and, for Sarsa, ``a'`` is the action
    picked for ``s'`` with the current Q-table *before* the learner updates Q(s, a); the
    actor then takes exactly that action next.
    """

    def __init__(self, networks: QTable, cfg: TabularConfig, num_envs: int, seed: int,
                 total_steps: int, num_actors: int = 1, actor_id: int = 0) -> None:
        self.net = networks
        self.q = networks.numpy()
        self.cfg = cfg
        self.B, self.T = num_envs, cfg.rollout_length
        self.rng = np.random.default_rng(seed)
        self.total_steps = max(1, total_steps)
        self.num_actors = num_actors
        self.actor_id = actor_id
        self.on_policy = cfg.update != "q_learning"
        self.version = -1
        self.steps = 0  # env steps taken by this actor
        T, B = self.T, self.B
        self.buf = {k: np.zeros((T, B), dt) for k, dt in (
            ("s", np.int64), ("a", np.int64), ("r", np.float64), ("s2", np.int64), ("a2", np.int64),
            ("terminated", bool), ("truncated", bool), ("first", bool))}
        self.t = 0
        self.first = np.ones(B, bool)
        self.obs: np.ndarray | None = None
        self.next_action: np.ndarray | None = None

    @property
    def epsilon(self) -> float:
        c = self.cfg
        return schedule(c.epsilon, c.epsilon_final, self.steps * self.num_actors / self.total_steps, c.epsilon_schedule, c.epsilon_decay)

    def load_variables(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Adopt the learner's Q-table (skipped when the version is the one already held)."""
        if version != self.version:
            if state_dict.keys() != {"q"} or state_dict["q"].shape != self.net.q.shape:
                self.net.load_state_dict(state_dict)  # raises a clear error on a mismatched table
            self.net.q.copy_(state_dict["q"])  # in place: self.q stays a view of the buffer
            self.version = version

    def observe_first(self, obs: np.ndarray) -> None:
        self.obs = np.asarray(obs)
        self.first[:] = True
        self.next_action = None

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        self.obs = obs
        if self.next_action is not None:  # Sarsa: the a' already used in the last target
            action, self.next_action = self.next_action, None
            return action
        return epsilon_greedy(self.q.__getitem__, obs, self.epsilon, self.q.shape[1], self.rng, break_ties=True)

    def observe(self, action: np.ndarray, step: StepResult) -> None:
        t, b = self.t, self.buf
        if t >= self.T:
            raise RuntimeError(f"the tabular actor holds {self.T} steps; drain it every rollout_length steps")
        done = step.terminated | step.truncated
        s2 = np.where(done, step.final_obs, step.next_obs)
        b["s"][t], b["a"][t], b["r"][t], b["s2"][t] = self.obs, action, step.reward, s2
        b["terminated"][t], b["truncated"][t], b["first"][t] = step.terminated, step.truncated, self.first
        self.steps += self.B
        if self.on_policy:
            eps = self.epsilon
            nxt = epsilon_greedy(self.q.__getitem__, step.next_obs, eps, self.q.shape[1], self.rng, break_ties=True)
            a2 = nxt.copy()
            trunc = step.truncated & ~step.terminated
            if trunc.any():  # bootstrap a truncated episode from an action picked at its final state
                a2[trunc] = epsilon_greedy(self.q.__getitem__, s2[trunc], eps, self.q.shape[1], self.rng, break_ties=True)
            b["a2"][t] = a2
            self.next_action = nxt
        self.first = done.copy()
        self.t += 1

    def drain(self) -> dict[str, Any]:
        """The transitions since the last drain, each array ``[T, B]``, plus ``actor_id``."""
        out: dict[str, Any] = {k: v[:self.t].copy() for k, v in self.buf.items()}
        out["actor_id"] = self.actor_id
        self.t = 0
        return out

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "steps": self.steps}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.steps = int(state["steps"])


class TabularPolicy:
    """Epsilon-greedy (``epsilon > 0``) or greedy actions of a Q-table, numpy in and out.

    Greedy ties go to the lowest action, so the evaluation policy is deterministic.
    """

    def __init__(self, net: QTable, epsilon: float = 0.0, seed: int = 0) -> None:
        self.q = net.numpy()
        self.epsilon = epsilon
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.int64)
        if self.epsilon > 0:
            return epsilon_greedy(self.q.__getitem__, obs, self.epsilon, self.q.shape[1], self.rng, break_ties=True)
        return self.q[obs].argmax(axis=1)
