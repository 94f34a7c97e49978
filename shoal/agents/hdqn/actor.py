"""The h-DQN actor (goal bookkeeping, both levels' transitions, both exploration rules) and its evaluation policy.

Per env copy the actor holds the goal being pursued, the observation it was chosen in and
the extrinsic reward summed since. Each step (paper, Algorithm 1):

- a copy without a goal (an episode's start, or its last goal just ended) gets one from the
  meta-controller, epsilon-greedy at the meta rate (DQN's linear schedule over env steps);
- the controller acts epsilon-greedily on ``(features(s), one_hot(g))`` at goal ``g``'s rate
  ``max(controller_epsilon_min, 1 - success_rate_g)``;
- the controller's transition ``((s, g), a, r_int, (s', g))`` has ``r_int = 1`` exactly when
  ``s'`` reaches ``g``; its discount is 0 when ``g`` is reached (the controller's episode for
  that goal ends) or the env episode terminates, ``gamma`` otherwise (a truncation bootstraps);
- the goal's span ends when ``g`` is reached or the env episode ends: the meta transition is
  ``(s_0, g, F, s', discount)`` with ``F`` the sum of extrinsic rewards from the goal's choice
  to ``s'`` and discount 0 on termination, ``gamma`` otherwise (one discount per goal, as the
  paper's meta-controller target ``F + gamma max_g' Q(s', g')``); the attempt is counted in
  the goal's success rate.

The global env-step count for the meta schedule is ``own env steps * num_actors``, as in
DQN's actor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoal.agents.dqn.actor import NumpyQ, TorchQ, q_function
from shoal.agents.exploration import epsilon_greedy
from shoal.agents.hdqn.config import HDQNConfig
from shoal.agents.hdqn.goals import Goals, SuccessRates
from shoal.agents.hdqn.networks import HDQNNetworks
from shoal.core.interfaces import Actor
from shoal.core.schedules import schedule
from shoal.core.types import StepResult


def choose_goals(meta_q: NumpyQ | TorchQ, goals: Goals, obs: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Epsilon-greedy goals ``[B]`` of the meta-controller for observations ``[B, *obs_shape]``."""
    return epsilon_greedy(meta_q, goals.features(obs), epsilon, goals.num_goals, rng).astype(np.int64)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
    if not parts:
        return None
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class HDQNActor(Actor):
    """Acts for ``num_envs`` copies with both levels; drains controller and meta transitions each hand-over."""

    def __init__(self, nets: HDQNNetworks, cfg: HDQNConfig, goals: Goals, num_envs: int, seed: int, total_steps: int,
                 actor_id: int = 0, num_actors: int = 1, engine: str = "auto") -> None:
        self.nets, self.cfg, self.goals, self.engine = nets, cfg, goals, engine
        self.meta_q, self.controller_q = q_function(nets.meta, engine), q_function(nets.controller, engine)
        self.num_envs = num_envs
        self.num_actions = nets.controller.num_actions
        self.rng = np.random.default_rng(seed)
        self.total_steps = max(1, total_steps)
        self.actor_id, self.num_actors = actor_id, num_actors
        self.success = SuccessRates(goals.num_goals, cfg.success_window, cfg.controller_epsilon_min)
        self.env_steps = 0  # env steps this actor has taken
        self.version = -1
        self.goal = np.full(num_envs, -1, np.int64)  # -1: the copy needs a goal
        self.start = np.zeros((num_envs, goals.feature_dim), np.float32)  # features of the goal's first state
        self.span_reward = np.zeros(num_envs, np.float64)  # extrinsic reward since the goal was chosen
        self._x = np.zeros((num_envs, goals.feature_dim + goals.num_goals), np.float32)
        self._controller: list[dict[str, np.ndarray]] = []
        self._meta: list[dict[str, np.ndarray]] = []
        self._attempts = np.zeros(goals.num_goals, np.int64)
        self._successes = np.zeros(goals.num_goals, np.int64)

    @property
    def meta_epsilon(self) -> float:
        """The meta-controller's exploration rate now: linear from ``epsilon_start`` to ``epsilon_final``."""
        c = self.cfg
        return schedule(c.epsilon_start, c.epsilon_final, self.env_steps * self.num_actors, "linear",
                        c.exploration_fraction * self.total_steps)

    def controller_epsilons(self) -> np.ndarray:
        """The controller's exploration rate of each goal ``[num_goals]`` (the success-rate rule)."""
        return self.success.epsilons()

    def load_variables(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Adopt the learner's parameters of both levels (skipped when this version is already held)."""
        if version != self.version:
            self.nets.load_state_dict(state_dict)
            self.version = version
            if not (self.meta_q.current() and self.controller_q.current()):  # re-pointed, not copied: new views
                self.meta_q = q_function(self.nets.meta, self.engine)
                self.controller_q = q_function(self.nets.controller, self.engine)

    def observe_first(self, obs: np.ndarray) -> None:
        """New episodes in every copy: goals and spans in progress are dropped."""
        self.goal[:] = -1
        self.span_reward[:] = 0.0

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        need = self.goal < 0
        if need.any():
            idx = np.flatnonzero(need)
            self.goal[idx] = choose_goals(self.meta_q, self.goals, obs[idx], self.meta_epsilon, self.rng)
            self.start[idx] = self.goals.features(obs[idx])
            self.span_reward[idx] = 0.0
        self._x = self.goals.controller_input(obs, self.goal)
        eps = self.controller_epsilons()[self.goal]
        return epsilon_greedy(self.controller_q, self._x, eps, self.num_actions, self.rng)

    def observe(self, action: np.ndarray, step: StepResult) -> None:
        gamma = self.cfg.gamma
        terminated = np.asarray(step.terminated, bool)
        done = terminated | np.asarray(step.truncated, bool)
        # The state the step reached: the final observation where the episode ended (next_obs is the reset one).
        mask = done.reshape(-1, *([1] * (np.ndim(step.next_obs) - 1)))
        reached_obs = np.where(mask, step.final_obs, step.next_obs)
        reached = self.goals.reached(reached_obs, self.goal)
        self._controller.append({
            "obs": self._x, "action": np.asarray(action, np.int64), "reward": reached.astype(np.float32),
            "discount": np.where(reached | terminated, 0.0, gamma).astype(np.float32),
            "next_obs": self.goals.controller_input(reached_obs, self.goal)})
        self.span_reward += np.asarray(step.reward, np.float64)
        ended = reached | done
        if ended.any():
            idx = np.flatnonzero(ended)
            self._meta.append({
                "obs": self.start[idx].copy(), "action": self.goal[idx].copy(),
                "reward": self.span_reward[idx].astype(np.float32),
                "discount": np.where(terminated[idx], 0.0, gamma).astype(np.float32),
                "next_obs": self.goals.features(reached_obs[idx])})
            self.success.record(self.goal[idx], reached[idx])
            np.add.at(self._attempts, self.goal[idx], 1)
            np.add.at(self._successes, self.goal[idx], reached[idx].astype(np.int64))
            self.goal[idx] = -1
        self.env_steps += len(action)

    def drain(self) -> dict[str, Any] | None:
        """``controller`` and ``meta`` transition items since the last drain (None when a level has none), and
        ``goal_attempts`` / ``goal_successes``: per goal, the spans that ended and those that reached it."""
        controller, meta = _concat(self._controller), _concat(self._meta)
        self._controller, self._meta = [], []
        if controller is None and meta is None:
            return None
        out = {"controller": controller, "meta": meta, "goal_attempts": self._attempts, "goal_successes": self._successes}
        self._attempts = np.zeros_like(self._attempts)
        self._successes = np.zeros_like(self._successes)
        return out

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "env_steps": self.env_steps, "success": self.success.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
        self.success.load_state(state["success"])
        self.version = -1  # parameters are not part of an actor's state: take the next ones offered


class HDQNPolicy:
    """Both levels greedy (``epsilon = 0``) or epsilon-greedy, one goal per env copy, numpy in and out.

    A copy's goal ends when an observation reaches it, and the meta-controller chooses the next
    one from that observation. The policy sees observations only, so it cannot tell an episode's
    end from its start: its goals start afresh on the first call (and whenever the number of
    copies changes), which makes it a fresh policy per evaluation, whose copies all start an
    episode then (evaluation counts each copy's first episode).
    """

    def __init__(self, nets: HDQNNetworks, goals: Goals, meta_epsilon: float = 0.0, controller_epsilon: float = 0.0,
                 seed: int = 0, engine: str = "auto") -> None:
        self.nets, self.goals = nets, goals
        self.meta_epsilon, self.controller_epsilon = meta_epsilon, controller_epsilon
        self.rng = np.random.default_rng(seed)
        self.meta_q, self.controller_q = q_function(nets.meta, engine), q_function(nets.controller, engine)
        self.goal: np.ndarray | None = None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        if self.goal is None or len(self.goal) != len(obs):
            self.goal = np.full(len(obs), -1, np.int64)
        goal = self.goal
        has = np.flatnonzero(goal >= 0)
        if len(has):
            goal[has[self.goals.reached(obs[has], goal[has])]] = -1
        need = np.flatnonzero(goal < 0)
        if len(need):
            goal[need] = choose_goals(self.meta_q, self.goals, obs[need], self.meta_epsilon, self.rng)
        return epsilon_greedy(self.controller_q, self.goals.controller_input(obs, goal), self.controller_epsilon,
                              self.nets.controller.num_actions, self.rng)
