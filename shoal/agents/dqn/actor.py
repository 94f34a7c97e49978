"""The DQN actor (epsilon-greedy over its copy of the Q-network) and the evaluation policy.

Exploration needs the run's global env-step count. The actor derives it from its own
count: ``own env steps * num_actors`` (exact when actors run in lock step, as in the
``local`` topology, and a close estimate in asynchronous topologies), so no extra
variable has to travel with the parameters. With ``exploration=apex`` each actor
instead keeps the constant Ape-X rate ``eps ** (1 + alpha * i / (N - 1))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoal.agents.dqn.config import DQNConfig
from shoal.agents.dqn.loss import apex_epsilon, linear_epsilon, priorities_from_td, q_learning_target
from shoal.agents.dqn.networks import QNetwork
from shoal.core.interfaces import Actor
from shoal.core.types import StepResult
from shoal.data import NStepTransitionAdder


def epsilon_greedy(q_fn: Any, obs: np.ndarray, epsilon: float, num_actions: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Epsilon-greedy actions for a batch; the network is skipped when every copy explores."""
    b = len(obs)
    explore = rng.random(b) < epsilon
    random_actions = rng.integers(0, num_actions, b)
    if explore.all():
        return random_actions
    with torch.inference_mode():
        greedy = q_fn(torch.as_tensor(obs)).argmax(-1).numpy()
    return np.where(explore, random_actions, greedy)


class DQNActor(Actor):
    """Acts epsilon-greedily for ``num_envs`` copies; its n-step adder's items are drained each hand-over.

    With ``actor_priorities`` the drained items carry a ``priority`` field: ``|n-step TD
    error| + per_eps`` computed with the actor's own network for both the chosen value
    and the bootstrap (an actor holds no target network), as Ape-X actors do.
    """

    def __init__(self, net: QNetwork, cfg: DQNConfig, num_envs: int, seed: int, total_steps: int,
                 actor_id: int = 0, num_actors: int = 1, adder: NStepTransitionAdder | None = None) -> None:
        self.net = net
        self.cfg = cfg
        self.num_envs = num_envs
        self.rng = np.random.default_rng(seed)
        self.total_steps = max(1, total_steps)
        self.actor_id, self.num_actors = actor_id, num_actors
        self.adder = adder if adder is not None else NStepTransitionAdder(cfg.n_step, cfg.gamma)
        self.env_steps = 0  # env steps this actor has taken
        self.version = -1

    @property
    def epsilon(self) -> float:
        """The current exploration rate."""
        c = self.cfg
        if c.exploration == "apex":
            return apex_epsilon(self.actor_id, self.num_actors, c.apex_epsilon, c.apex_alpha)
        return linear_epsilon(self.env_steps * self.num_actors, c.epsilon_start, c.epsilon_final,
                              c.exploration_fraction * self.total_steps)

    def load_variables(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Adopt the learner's parameters (skipped when this version is already held)."""
        if version != self.version:
            self.net.load_state_dict(state_dict)
            self.version = version

    def observe_first(self, obs: np.ndarray) -> None:
        self.adder.add_first(obs)

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        return epsilon_greedy(self.net, obs, self.epsilon, self.net.num_actions, self.rng)

    def observe(self, action: np.ndarray, step: StepResult) -> None:
        self.adder.add(action, step)
        self.env_steps += len(action)

    def drain(self) -> dict[str, np.ndarray] | None:
        """Transition items since the last drain (with ``priority`` when the actor computes them)."""
        items = self.adder.drain()
        if items is not None and self.cfg.actor_priorities:
            items["priority"] = self.priorities(items)
        return items

    @torch.inference_mode()
    def priorities(self, items: dict[str, np.ndarray]) -> np.ndarray:
        """``|r + discount * max_a Q(s', a) - Q(s, a)| + per_eps`` for a batch of items."""
        n = len(items["reward"])
        q_all = self.net(torch.cat([torch.as_tensor(items["obs"]), torch.as_tensor(items["next_obs"])]))
        q = q_all[:n].gather(1, torch.as_tensor(items["action"]).long().unsqueeze(1)).squeeze(1)
        target = q_learning_target(torch.as_tensor(items["reward"]), torch.as_tensor(items["discount"]), q_all[n:])
        return priorities_from_td(target - q, self.cfg.per_eps).numpy().astype(np.float64)

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "env_steps": self.env_steps, "version": self.version}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
        self.version = -1  # parameters are not part of an actor's state: take the next ones offered


class EpsilonGreedyPolicy:
    """Greedy (``epsilon = 0``) or epsilon-greedy actions of a Q-network, numpy in and out."""

    def __init__(self, net: QNetwork, epsilon: float = 0.0, seed: int = 0) -> None:
        self.net = net
        self.epsilon = epsilon
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return epsilon_greedy(self.net, obs, self.epsilon, self.net.num_actions, self.rng)
