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
from shoal.agents.replay_builder import TrainFreqBuilder
from shoal.core.interfaces import Policy, Table
from shoal.core.seeding import derive_seed
from shoal.data import FrameStackStorage, NStepTransitionAdder, ReplayTable


class DQNBuilder(TrainFreqBuilder):
    """Builds Q-networks, a replay table, epsilon-greedy actors and a DQN learner."""

    config: DQNConfig

    @property
    def replay_rate(self) -> tuple[float, int]:
        """``batch_size * gradient_steps / train_freq`` samples per item, from ``max(learning_starts, batch_size)``
        items (at most a full table)."""
        c = self.config
        return c.batch_size * c.gradient_steps / c.train_freq, min(max(c.learning_starts, c.batch_size), c.buffer_size)

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
