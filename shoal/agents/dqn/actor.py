"""The DQN actor (epsilon-greedy over its copy of the Q-network) and the evaluation policy.

Both evaluate MLP Q-networks with numpy on views of the parameters (:class:`NumpyQ`,
built on ``shoal.nets.numpy_mlp``), torch otherwise: the same Q values within float
rounding, several times less overhead per call for an actor's few observations.

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
from torch import nn

from shoal.agents.dqn.config import DQNConfig
from shoal.agents.dqn.loss import priorities_from_td, q_learning_target
from shoal.agents.dqn.networks import QNetwork
from shoal.agents.exploration import epsilon_greedy
from shoal.core.interfaces import Actor
from shoal.core.schedules import per_actor_exponent, schedule
from shoal.core.types import StepResult
from shoal.data import NStepTransitionAdder
from shoal.nets.numpy_mlp import NumpyMLP, linear_layers, mlp_from_module, numpy_activation, on_cpu_float32


class NumpyQ:
    """A Q-network's ``Q(obs) [B, num_actions]`` computed with numpy on views of its parameters.

    Covers MLP Q-networks (plain or dueling heads, relu or tanh) on the CPU: for the few
    observations an actor holds, this is several times faster than torch's dispatch.
    """

    def __init__(self, net: QNetwork) -> None:
        if not NumpyQ.supports(net):
            raise ValueError("NumpyQ needs an MLP Q-network with relu or tanh activations on the CPU")
        act = numpy_activation(net._act)
        self.torso = NumpyMLP(linear_layers(net._linears), act, activate_last=True,
                              source=[lin.weight for lin in net._linears])
        heads = (net.value, net.advantage) if net.dueling else (net.q,)
        self.heads = [mlp_from_module(h) for h in heads]
        self.dueling = net.dueling

    @staticmethod
    def supports(net: nn.Module) -> bool:
        """True for a non-image QNetwork whose activations and heads numpy can evaluate, on the CPU."""
        if not isinstance(net, QNetwork) or net.image or numpy_activation(net._act) is None or not on_cpu_float32(net):
            return False
        heads = (net.value, net.advantage) if net.dueling else (net.q,)
        return all(mlp_from_module(h) is not None for h in heads)

    def current(self) -> bool:
        """False when the network's parameters were re-pointed since this was built."""
        return self.torso.current() and all(h.current() for h in self.heads)  # type: ignore[union-attr]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        h = self.torso(np.asarray(obs, dtype=np.float32).reshape(len(obs), -1))
        if not self.dueling:
            return self.heads[0](h)  # type: ignore[misc]
        v, adv = self.heads[0](h), self.heads[1](h)  # type: ignore[misc]
        return v + adv - adv.mean(-1, keepdims=True)


class TorchQ:
    """A Q-network called with torch, numpy in and out (any torso, the fallback of :class:`NumpyQ`)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def current(self) -> bool:
        return True

    @torch.inference_mode()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.net(torch.as_tensor(obs)).numpy()


def q_function(net: nn.Module, engine: str = "auto") -> NumpyQ | TorchQ:
    """Numpy inference for eligible Q-networks (``engine='auto'`` or ``'numpy'``), torch otherwise."""
    if engine == "numpy" or (engine == "auto" and NumpyQ.supports(net)):
        return NumpyQ(net)  # type: ignore[arg-type]
    return TorchQ(net)


class DQNActor(Actor):
    """Acts epsilon-greedily for ``num_envs`` copies; its n-step adder's items are drained each hand-over.

    With ``actor_priorities`` the drained items carry a ``priority`` field: ``|n-step TD
    error| + per_eps`` computed with the actor's own network for both the chosen value
    and the bootstrap (an actor holds no target network), as Ape-X actors do.
    """

    def __init__(self, net: QNetwork, cfg: DQNConfig, num_envs: int, seed: int, total_steps: int,
                 actor_id: int = 0, num_actors: int = 1, adder: NStepTransitionAdder | None = None,
                 engine: str = "auto") -> None:
        self.net = net
        self.engine = engine
        self.q = q_function(net, engine)
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
            return per_actor_exponent(c.apex_epsilon, self.actor_id, self.num_actors, c.apex_alpha)
        return schedule(c.epsilon_start, c.epsilon_final, self.env_steps * self.num_actors, "linear",
                        c.exploration_fraction * self.total_steps)

    def load_variables(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Adopt the learner's parameters (skipped when this version is already held)."""
        if version != self.version:
            self.net.load_state_dict(state_dict)
            self.version = version
            if not self.q.current():  # parameters re-pointed (not copied in place): rebuild the views
                self.q = q_function(self.net, self.engine)

    def observe_first(self, obs: np.ndarray) -> None:
        self.adder.add_first(obs)

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        return epsilon_greedy(self.q, obs, self.epsilon, self.net.num_actions, self.rng)

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

    def __init__(self, net: QNetwork, epsilon: float = 0.0, seed: int = 0, engine: str = "auto") -> None:
        self.net = net
        self.epsilon = epsilon
        self.rng = np.random.default_rng(seed)
        self.q = q_function(net, engine)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return epsilon_greedy(self.q, obs, self.epsilon, self.net.num_actions, self.rng)
