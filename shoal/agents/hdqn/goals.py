"""h-DQN's goals: what the networks see of an observation, when a goal is reached, and each goal's success rate.

With Discrete observations (the paper's setting) every observation is a goal, reached when
the observation equals it, and the networks see observations one-hot. Any other env names a
goal function ``module:function`` (config ``goal_fn``) and a number of goals (``num_goals``):
``goal_fn(obs, goals) -> reached``, batched: ``obs`` is ``[B, *obs_shape]`` (what the env
returns), ``goals`` is ``[B]`` integers in ``0..num_goals-1``, the result ``[B]`` booleans.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable

import numpy as np

from shoal.core.types import EnvSpec
from shoal.errors import ConfigError, EnvError

GoalFn = Callable[[np.ndarray, np.ndarray], Any]


def load_goal_fn(path: str) -> GoalFn:
    """The function ``module:function`` names, or a ConfigError saying what is wrong with it."""
    module, _, name = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise ConfigError(f"goal_fn={path!r}: module {module!r} cannot be imported ({e}); put it on the Python path") from None
    except AttributeError:
        raise ConfigError(f"goal_fn={path!r}: module {module!r} has no {name!r}; name a function defined there") from None
    if not callable(fn):
        raise ConfigError(f"goal_fn={path!r} is a {type(fn).__name__}, not a function; name a function f(obs, goals) -> reached")
    return fn


def one_hot(index: np.ndarray, n: int) -> np.ndarray:
    """``[B] -> [B, n]`` float32 rows with a 1 at each index."""
    out = np.zeros((len(index), n), np.float32)
    out[np.arange(len(index)), np.asarray(index, np.int64)] = 1.0
    return out


class Goals:
    """The goal space of one env: the networks' features of an observation and the goal test.

    ``feature_dim`` is the width of :meth:`features`; ``num_goals`` the meta-controller's
    number of choices.
    """

    def __init__(self, spec: EnvSpec, goal_fn: str = "", num_goals: int = 0) -> None:
        self.num_states = spec.num_obs_states
        self.obs_shape = spec.obs_shape
        self.feature_dim = self.num_states if self.num_states is not None else int(math.prod(spec.obs_shape))
        self.path = goal_fn
        if goal_fn:
            self.fn: GoalFn | None = load_goal_fn(goal_fn)
            self.num_goals = int(num_goals)
        elif self.num_states is not None:
            if num_goals not in (0, self.num_states):
                raise ConfigError(f"without goal_fn the goals of {spec.env_id!r} are its {self.num_states} observations, but "
                                  f"num_goals={num_goals}; drop num_goals or give a goal_fn")
            self.fn = None
            self.num_goals = self.num_states
        else:
            raise EnvError(f"hdqn needs goals: {spec.env_id!r} has Box{list(spec.obs_shape)} observations, so name a goal "
                           "function and their number, e.g. goal_fn=mypkg.goals:reached num_goals=4 (see docs/hdqn.md)")

    def features(self, obs: np.ndarray) -> np.ndarray:
        """What the networks see of observations ``[B, *obs_shape]``: one-hot states, or the flattened floats."""
        obs = np.asarray(obs)
        if self.num_states is not None:
            return one_hot(obs.reshape(len(obs)), self.num_states)
        return obs.reshape(len(obs), -1).astype(np.float32, copy=False)

    def controller_input(self, obs: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """The controller's input ``[B, feature_dim + num_goals]``: the features of ``obs`` and the goals one-hot."""
        return np.concatenate([self.features(obs), one_hot(goals, self.num_goals)], axis=1)

    def reached(self, obs: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """``[B]`` booleans: whether each observation reaches its copy's goal."""
        goals = np.asarray(goals, np.int64)
        if self.fn is None:
            return np.asarray(obs).reshape(len(goals)) == goals
        out = np.asarray(self.fn(np.asarray(obs), goals))
        if out.shape != goals.shape:
            raise ConfigError(f"goal_fn {self.path!r} returned shape {list(out.shape)} for {len(goals)} observations; "
                              f"it must return one boolean per observation, shape [{len(goals)}]")
        return out.astype(bool)


class SuccessRates:
    """Each goal's outcomes over its last ``window`` attempts (1 reached, 0 not), and the controller's epsilons.

    The rule (the paper anneals the controller's epsilon of each goal adaptively from its success
    rate at reaching it; this formula is shoal's): ``epsilon_g = max(min_epsilon, 1 - success_rate_g)``;
    a goal never attempted has success rate 0, so epsilon 1.
    """

    def __init__(self, num_goals: int, window: int, min_epsilon: float) -> None:
        self.window = int(window)
        self.min_epsilon = float(min_epsilon)
        self.outcomes = np.zeros((num_goals, self.window), np.int8)  # a ring per goal
        self.attempts = np.zeros(num_goals, np.int64)

    def record(self, goals: np.ndarray, reached: np.ndarray) -> None:
        """Add one finished attempt per entry (in order: repeated goals fill their ring one after another)."""
        for g, r in zip(np.asarray(goals, np.int64).tolist(), np.asarray(reached, bool).tolist()):
            self.outcomes[g, self.attempts[g] % self.window] = r
            self.attempts[g] += 1

    def rates(self) -> np.ndarray:
        """``[num_goals]`` success rates over each goal's last ``min(attempts, window)`` attempts (0 if none)."""
        n = np.minimum(self.attempts, self.window)
        return np.where(n > 0, self.outcomes.sum(axis=1) / np.maximum(n, 1), 0.0)

    def epsilons(self) -> np.ndarray:
        """``[num_goals]`` controller exploration rates ``max(min_epsilon, 1 - success_rate)``."""
        return np.maximum(self.min_epsilon, 1.0 - self.rates())

    def state(self) -> dict[str, Any]:
        return {"outcomes": self.outcomes.copy(), "attempts": self.attempts.copy()}

    def load_state(self, state: dict[str, Any]) -> None:
        outcomes = np.asarray(state["outcomes"], np.int8)
        if outcomes.shape != self.outcomes.shape:
            raise ConfigError(f"the checkpoint's goal statistics are for {outcomes.shape[0]} goals and a window of "
                              f"{outcomes.shape[1]}, this run has {self.outcomes.shape[0]} and {self.window}; "
                              "resume with the run's num_goals and success_window")
        self.outcomes[:] = outcomes
        self.attempts[:] = np.asarray(state["attempts"], np.int64)
