"""The DQN builder: everything DQN and its variants are, nothing about where they run.

In the ``local`` topology the replay table lives in the learner node: each iteration
an actor runs ``train_freq`` env steps and hands its n-step items over, and the
learner takes the steps :meth:`DQNBuilder.learner_steps_due` says are due. The Ape-X
topology places the same table in a replay node and the same actors and learner
around it.
"""

from __future__ import annotations

from torch import nn

from shoal.agents.dqn.actor import DQNActor, EpsilonGreedyPolicy
from shoal.agents.dqn.config import DQNConfig
from shoal.agents.dqn.learner import DQNLearner
from shoal.agents.dqn.networks import QNetwork
from shoal.core.interfaces import Builder, Policy, Table
from shoal.core.seeding import derive_seed
from shoal.data import FrameStackStorage, NStepTransitionAdder, ReplayTable


class DQNBuilder(Builder):
    """Builds Q-networks, a replay table, epsilon-greedy actors and a DQN learner."""

    config: DQNConfig

    @property
    def steps_per_iteration(self) -> int:
        """Vector steps per actor per iteration: ``train_freq`` env steps (at least one vector step)."""
        return max(1, self.config.train_freq // self.num_envs)

    @property
    def replay_batch_size(self) -> int:
        """``batch_size``: items per learner batch."""
        return self.config.batch_size

    @property
    def checkpoint_replay(self) -> bool:
        """``checkpoint_replay``: whether checkpoints hold the replay table."""
        return self.config.checkpoint_replay

    @property
    def replay_rate(self) -> tuple[float, int]:
        """``batch_size * gradient_steps / train_freq`` samples per item, from ``max(learning_starts, batch_size)``
        items (at most a full table)."""
        c = self.config
        return c.batch_size * c.gradient_steps / c.train_freq, min(max(c.learning_starts, c.batch_size), c.buffer_size)

    def learner_steps_due(self, env_steps: int, learner_steps: int) -> int:
        """``gradient_steps`` per ``train_freq`` env steps from ``learning_starts`` on, minus those done."""
        c = self.config
        if env_steps < c.learning_starts:
            return 0
        rounds = (env_steps - c.learning_starts) // c.train_freq + 1
        return max(0, rounds * c.gradient_steps - learner_steps)

    def make_networks(self) -> QNetwork:
        c = self.config
        return QNetwork(self.env_spec, c.hidden, c.activation, c.dueling, c.head_hidden)

    def make_policy(self, networks: nn.Module, evaluation: bool) -> Policy:
        assert isinstance(networks, QNetwork)
        eps = self.config.eval_epsilon if evaluation else self.config.epsilon_final
        return EpsilonGreedyPolicy(networks, eps, derive_seed(self.seed, "policy", evaluation))

    def make_tables(self) -> dict[str, Table]:
        c = self.config
        storage = FrameStackStorage(c.buffer_size) if c.frame_storage else None
        seed = derive_seed(self.seed, "replay")
        if c.prioritized:
            table = ReplayTable.prioritized(c.buffer_size, c.per_alpha, min_size=c.batch_size, seed=seed,
                                            storage=storage)
        else:
            table = ReplayTable.uniform(c.buffer_size, min_size=c.batch_size, seed=seed, storage=storage)
        return {"replay": table}

    def make_adder(self) -> NStepTransitionAdder:
        """An n-step adder whose items are drained by the topology."""
        return NStepTransitionAdder(self.config.n_step, self.config.gamma)

    def make_actor(self, networks: nn.Module, num_envs: int, actor_id: int = 0, num_actors: int = 1,
                   seed: int = 0) -> DQNActor:
        assert isinstance(networks, QNetwork)
        return DQNActor(networks, self.config, num_envs, seed, self.total_steps, actor_id, num_actors,
                        self.make_adder())

    def make_learner(self, networks: nn.Module, tables: dict[str, Table]) -> DQNLearner:
        assert isinstance(networks, QNetwork)
        table = next(iter(tables.values())) if tables else None
        return DQNLearner(networks, self.config, table, self.total_steps, self.device)
