"""The small interfaces every algorithm and topology is built from (after Acme's core).

What is learned (networks, losses, adders) lives in a :class:`Builder`; where it runs
(how many actors and learners, which process) lives in a topology, which only ever
calls a builder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from shoal.core.nonfinite import checkpoint_guards
from shoal.core.types import EnvSpec, StepResult

#: A policy maps a batch of observations to a batch of actions (numpy in, numpy out).
Policy = Callable[[np.ndarray], np.ndarray]


class VariableSource(ABC):
    """Anything that serves versioned parameters: a learner, a parameter server."""

    @abstractmethod
    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        """Return ``(version, state_dict)``; the version grows by one per update."""


class Actor(ABC):
    """Chooses actions for a batch of env copies and feeds what it sees to its adder."""

    @abstractmethod
    def select_action(self, obs: np.ndarray) -> np.ndarray:
        """Actions for a batch of observations ``[B, *obs_shape]``."""

    def observe_first(self, obs: np.ndarray) -> None:
        """Record the first observations of new episodes in all copies (after a reset or a new env);
        data of steps before it that no item holds yet (a partial unroll or n-step window) is dropped."""

    def observe(self, action: np.ndarray, step: StepResult) -> None:
        """Record the action taken and the step that followed."""

    @abstractmethod
    def load_variables(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Adopt the learner's parameters ``state_dict`` of ``version`` (a no-op when that version is held)."""

    def update(self, wait: bool = False) -> None:
        """Pull fresh parameters from the variable source (the hook of actors that hold one; asynchronous topologies)."""

    def drain(self) -> Any:
        """Hand over the data collected since the last drain (a Rollout, items, ...)."""
        return None

    def state(self) -> dict[str, Any]:
        """Checkpointable actor state (generators, counters); not the parameters."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""


class Learner(VariableSource):
    """Turns experience into new parameters."""

    #: Updates applied so far: the version :meth:`get_variables` labels its parameters with.
    version: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # One mechanism for every learner: its state carries its NaN/inf guards' counters (nonfinite_updates).
        super().__init_subclass__(**kwargs)
        checkpoint_guards(cls)

    @abstractmethod
    def step(self, data: Any = None) -> Mapping[str, float | torch.Tensor]:
        """One update from ``data`` (on-policy) or from the learner's own tables (off-policy).

        Returns metrics as numbers or 0-d tensors; callers convert them with ``float()``, so a
        learner on an accelerator can leave them there and skip a synchronisation per step.
        """

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimiser, counters (tensors and plain values).

        Every subclass's result also carries its NaN/inf guards' counters, which its ``load_state`` restores
        (:func:`~shoal.core.nonfinite.checkpoint_guards`): a learner does not save them itself.
        """

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""


class GradientLearner(Protocol):
    """A learner whose update splits in two: gradients computed in one place, applied in another (A3C)."""

    def compute_gradients(self, data: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The gradient of the loss on ``data`` as one flat CPU vector, not applied."""

    def apply_gradients(self, grad: torch.Tensor, env_steps: int = 0) -> dict[str, float]:
        """Apply a flat gradient computed elsewhere; one new version."""


class Adder(ABC):
    """Turns the actor's stream of steps into items for a table (or a rollout for a learner)."""

    @abstractmethod
    def add_first(self, obs: np.ndarray) -> None:
        """Start episodes for all copies with these observations."""

    @abstractmethod
    def add(self, action: np.ndarray, step: StepResult, extras: dict[str, Any] | None = None) -> None:
        """Record ``action`` taken in the current observations and the resulting step."""

    def reset(self) -> None:
        """Forget partial episodes."""

    def drain(self) -> Any:
        """Items produced since the last drain, for a topology to route (None if written in place)."""
        return None


class Table(ABC):
    """A replay or queue table: storage + selector + remover + rate limiter."""

    @abstractmethod
    def insert(self, items: dict[str, np.ndarray], priorities: np.ndarray | None = None) -> np.ndarray:
        """Insert a batch of items (leading axis = item); returns their keys."""

    @abstractmethod
    def sample(self, n: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Return ``(items, keys, probabilities)`` for ``n`` sampled items."""

    def can_sample(self, n: int = 1) -> bool:
        """Whether a sample of ``n`` items would be admitted now."""
        return len(self) >= n

    def sample_batches(self, num_batches: int, batch_size: int
                       ) -> list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
        """``num_batches`` independent samples of ``batch_size`` items, as that many :meth:`sample` calls."""
        return [self.sample(batch_size) for _ in range(num_batches)]

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        """Set new priorities for the given keys (prioritized selectors)."""

    def state(self) -> dict[str, Any]:
        """Everything stored, for checkpoints (a builder's ``checkpoint_replay``); not every table can be saved."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved in a checkpoint")

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        raise NotImplementedError(f"{type(self).__name__} cannot be restored from a checkpoint")

    @abstractmethod
    def __len__(self) -> int:
        """Number of items currently stored."""


class RewardScaler(Protocol):
    """Scales a batch of rewards on the actor side (e.g. by the running std of the return)."""

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Scaled rewards of one vector step; ``done`` marks copies whose episode ended."""

    def new_episodes(self) -> None:
        """Every copy starts a new episode (its env was made anew): forget the episodes in progress."""

    def state(self) -> dict[str, Any]:
        """Checkpointable statistics."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""


class Builder(ABC):
    """Everything an algorithm is, and nothing about where it runs."""

    def __init__(self, config: Any, env_spec: EnvSpec, total_steps: int = 0, seed: int = 0, device: str = "cpu") -> None:
        self.config = config
        self.env_spec = env_spec
        self.total_steps = total_steps
        self.seed = seed
        self.device = device

    @property
    def num_envs(self) -> int:
        """Env copies each actor steps (``config.num_envs`` when the config has it)."""
        return int(getattr(self.config, "num_envs", 1))

    @property
    def steps_per_iteration(self) -> int:
        """Vector steps each actor runs between hand-overs to the learner."""
        return int(getattr(self.config, "rollout_length", 1))

    @property
    def actor_pull_period(self) -> int:
        """Vector steps an asynchronous (Ape-X) actor runs between parameter pulls (``config.actor_update_period``)."""
        return int(getattr(self.config, "actor_update_period", 1))

    @property
    def batches_per_call(self) -> int:
        """Batches a remote (Ape-X) learner samples per replay call (``config.batches_per_call``)."""
        return int(getattr(self.config, "batches_per_call", 1))

    @property
    def replay_batch_size(self) -> int:
        """Items in each batch the learner samples from its replay table (0: it samples no replay)."""
        return 0

    @property
    def replay_rate(self) -> tuple[float, int]:
        """The replay ratio a central replay keeps for this algorithm (Ape-X): ``(samples per inserted
        item, items stored before the first sample)``, as the learner would keep it alone."""
        return 1.0, max(1, self.replay_batch_size)

    @property
    def items_per_env_step(self) -> float:
        """Replay items an actor's adder writes per env step on average (1: transitions; sequence
        adders write one per ``period`` steps), what a central replay sizes its rate band with."""
        return 1.0

    @property
    def checkpoint_replay(self) -> bool:
        """Whether checkpoints hold the replay tables, so that a resumed run continues with its data."""
        return False

    @property
    def rollout_actor_critic(self) -> bool:
        """Whether actors record rollouts with behaviour log-probs for an actor-critic learner
        (what the impala, seed, ga3c and a3c topologies carry)."""
        return False

    @property
    def gradients_as_values(self) -> bool:
        """Whether the learner can compute a gradient without applying it and apply one computed elsewhere."""
        return False

    @property
    def local_only(self) -> str | None:
        """Why the algorithm as configured runs on the local topology only (what the other topologies'
        fit checks report), or None when it may run elsewhere."""
        return None

    @property
    def offline(self) -> bool:
        """Whether the algorithm learns from a dataset with no actors (only the offline topology runs it)."""
        return False

    @property
    def single_learner(self) -> str | None:
        """Why the algorithm as configured trains with one learner only (refused before a group of
        ``num_learners > 1`` is placed), or None when a learner group may train it."""
        return None

    def make_reward_normalizer(self, num_envs: int) -> RewardScaler | None:
        """What an actor of ``num_envs`` copies scales env rewards with before its adder sees them (None: nothing)."""
        return None

    def learner_steps_due(self, env_steps: int, learner_steps: int) -> int:
        """Learner steps to run now, given the env steps so far and the learner steps done.

        On-policy default: one step per hand-over. Off-policy builders return a count
        following their replay ratio (0 until learning starts).
        """
        return 1

    @abstractmethod
    def make_networks(self) -> nn.Module:
        """Fresh networks for this env."""

    @abstractmethod
    def make_policy(self, networks: nn.Module, evaluation: bool) -> Policy:
        """A policy: deterministic when ``evaluation`` is True, exploring otherwise."""

    def make_tables(self) -> dict[str, Table]:
        """Replay or queue tables (empty for on-policy algorithms)."""
        return {}

    @abstractmethod
    def make_actor(self, networks: nn.Module, num_envs: int, actor_id: int = 0, num_actors: int = 1, seed: int = 0) -> Actor:
        """An actor stepping ``num_envs`` copies; ``actor_id`` lets actors differ (e.g. epsilon)."""

    @abstractmethod
    def make_learner(self, networks: nn.Module, tables: dict[str, Table]) -> Learner:
        """A learner updating ``networks``."""
