"""The R2D2 actor (epsilon-greedy over a recurrent Q-network, one LSTM state per env copy) and the evaluation policy.

The actor writes every timestep to a :class:`~shoal.data.SequenceAdder` together with the
LSTM state that entered it (``lstm_h``, ``lstm_c`` extras); each drained sequence keeps the
state of its first timestep only, which is what the learner starts its burn-in from (the
paper's stored-state strategy). The state of a copy is zeroed when its episode ends, so the
state entering an episode's first timestep is zero, as the learner's unroll assumes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoal.agents.exploration import epsilon_greedy
from shoal.agents.r2d2.config import R2D2Config
from shoal.agents.r2d2.inference import NumpyState, recurrent_q_function, zero_state
from shoal.agents.r2d2.loss import n_step_double_q_targets, sequence_priorities, trained_steps
from shoal.agents.r2d2.networks import RecurrentQNetwork, stored_state
from shoal.core.interfaces import Actor
from shoal.core.schedules import per_actor_exponent, schedule
from shoal.core.types import StepResult
from shoal.data import SequenceAdder


def sequence_adder(cfg: R2D2Config) -> SequenceAdder:
    """The adder of R2D2's replay items: ``burn_in + trace_length`` timesteps every ``period``."""
    return SequenceAdder(cfg.sequence_length, cfg.period, cfg.gamma)


class R2D2Actor(Actor):
    """Acts epsilon-greedily for ``num_envs`` copies, each with its own LSTM state; drains stored-state sequences.

    With ``actor_priorities`` the drained sequences carry a ``priority`` field computed with
    the actor's local copy of the network standing in for both the online and the target
    network (no target network is shipped to actors), so the Double Q bootstrap reduces to
    max-Q: an approximation of the learner-side priorities of the paper, in the way Ape-X
    actors compute first priorities with their local copy. The learner replaces them with
    its own after every sample.

    Exploration ``apex`` gives every env copy its own epsilon: copy ``j`` of actor ``i``
    is index ``i * num_envs + j`` of ``num_actors * num_envs`` in the Ape-X spread (as
    SEED RL's R2D2 spreads them over all its environments).
    """

    def __init__(self, net: RecurrentQNetwork, cfg: R2D2Config, num_envs: int, seed: int, total_steps: int,
                 actor_id: int = 0, num_actors: int = 1, adder: SequenceAdder | None = None) -> None:
        self.net = net
        self.cfg = cfg
        self.num_envs = num_envs
        self.rng = np.random.default_rng(seed)
        self.total_steps = max(1, total_steps)
        self.actor_id, self.num_actors = actor_id, num_actors
        self.adder = adder if adder is not None else sequence_adder(cfg)
        self.env_steps = 0
        self.version = -1
        self.q = recurrent_q_function(net)
        self.lstm_state: NumpyState = zero_state(net, num_envs)
        self._entering: NumpyState = self.lstm_state  # the state entering the timestep being acted on
        self._leaving: NumpyState = self.lstm_state  # the state after it

    @property
    def epsilon(self) -> np.ndarray:
        """The current exploration rate of each env copy, ``[num_envs]``."""
        c = self.cfg
        if c.exploration == "apex":
            total = self.num_actors * self.num_envs
            return np.array([per_actor_exponent(c.apex_epsilon, self.actor_id * self.num_envs + j, total, c.apex_alpha)
                             for j in range(self.num_envs)])
        eps = schedule(c.epsilon_start, c.epsilon_final, self.env_steps * self.num_actors, "linear",
                       c.exploration_fraction * self.total_steps)
        return np.full(self.num_envs, eps)

    def load_variables(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Adopt the learner's parameters (skipped when this version is already held)."""
        if version != self.version:
            self.net.load_state_dict(state_dict)
            self.version = version
            if not self.q.current():  # parameters re-pointed (not copied in place): rebuild the views
                self.q = recurrent_q_function(self.net)

    def observe_first(self, obs: np.ndarray) -> None:
        """New episodes in every copy: zero LSTM states, and the adder starts afresh."""
        self.adder.add_first(obs)
        self.lstm_state = zero_state(self.net, len(obs))

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        self._entering = self.lstm_state
        q, self._leaving = self.q(obs, self.lstm_state)
        explore = self.rng.random(len(obs)) < self.epsilon  # each copy at its own rate
        random_actions = self.rng.integers(0, self.net.num_actions, len(obs))
        return np.where(explore, random_actions, q.argmax(-1))

    def observe(self, action: np.ndarray, step: StepResult) -> None:
        h, c = self._entering
        self.adder.add(action, step, {"lstm_h": h.transpose(1, 0, 2), "lstm_c": c.transpose(1, 0, 2)})
        done = np.asarray(step.terminated, bool) | np.asarray(step.truncated, bool)
        h, c = self._leaving
        if done.any():  # the next timestep of these copies starts an episode: it enters with a zero state
            keep = (~done).astype(h.dtype).reshape(1, -1, 1)
            h, c = h * keep, c * keep
        self.lstm_state = (h, c)
        self.env_steps += len(action)

    def drain(self) -> dict[str, np.ndarray] | None:
        """Sequences since the last drain, each with its start state (and ``priority`` when the actor computes it).

        Sequences whose real timesteps end within the burn-in hold no transition to learn
        from and are dropped.
        """
        items = self.adder.drain()
        if items is None:
            return None
        keep = items["mask"].sum(axis=1) >= self.cfg.burn_in + 2
        items = {k: v[keep] for k, v in items.items()}
        if not keep.any():
            return None
        # one state per sequence, copied so the per-timestep states are freed
        items["lstm_h"], items["lstm_c"] = (np.ascontiguousarray(items[k][:, 0]) for k in ("lstm_h", "lstm_c"))
        if self.cfg.actor_priorities:
            items["priority"] = self.priorities(items)
        return items

    @torch.inference_mode()
    def priorities(self, items: dict[str, np.ndarray]) -> np.ndarray:
        """Sequence priorities as the learner computes them, with the actor's network as both online and
        target network (so max-Q bootstraps, an approximation of the learner's Double Q priorities)."""
        c = self.cfg
        obs = torch.as_tensor(items["obs"]).transpose(0, 1)
        q = self.net(obs, stored_state(items))[0][c.burn_in:]  # no autograd here: one unroll, burn-in dropped
        tail = {k: torch.as_tensor(items[k]).transpose(0, 1)[c.burn_in:] for k in ("action", "reward", "discount", "mask")}
        target = n_step_double_q_targets(tail["reward"].float(), tail["discount"].float(), tail["mask"], q, q, c.n_step,
                                         c.rescale_eps if c.value_rescaling else None)
        chosen = q[:-1].gather(-1, tail["action"][:-1].long().unsqueeze(-1)).squeeze(-1)
        valid = trained_steps(tail["mask"])
        td = (target - chosen) * valid
        return sequence_priorities(td, valid, c.per_eta, c.per_eps).numpy().astype(np.float64)

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "env_steps": self.env_steps, "version": self.version}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
        self.version = -1  # parameters are not part of an actor's state: take the next ones offered


class RecurrentEpsilonGreedyPolicy:
    """Greedy (``epsilon = 0``) or epsilon-greedy actions of a recurrent Q-network, one LSTM state per copy.

    The state of every copy starts at zero on the first call (and whenever the number of
    copies changes): a fresh policy per evaluation, whose copies all start an episode then.
    """

    def __init__(self, net: RecurrentQNetwork, epsilon: float = 0.0, seed: int = 0) -> None:
        self.net = net
        self.epsilon = epsilon
        self.rng = np.random.default_rng(seed)
        self.q = recurrent_q_function(net)
        self.state: NumpyState | None = None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.state is None or self.state[0].shape[1] != len(obs):
            self.state = zero_state(self.net, len(obs))
        q, self.state = self.q(obs, self.state)
        return epsilon_greedy(lambda _: q, obs, self.epsilon, self.net.num_actions, self.rng)
