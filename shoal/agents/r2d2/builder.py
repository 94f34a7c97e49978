"""The R2D2 builder: recurrent Q-networks, a sequence replay table, stateful actors and the R2D2 learner.

In the ``local`` topology the table lives in the learner node: each iteration an actor
runs ``train_freq`` env steps and hands its sequences over, and the learner takes the
steps :meth:`R2D2Builder.learner_steps_due` says are due. The Ape-X topology places the
same table in a replay node, with the actors computing the sequences' first priorities.
"""

from __future__ import annotations

from torch import nn

from shoal.agents.r2d2.actor import R2D2Actor, RecurrentEpsilonGreedyPolicy, sequence_adder
from shoal.agents.r2d2.config import R2D2Config
from shoal.agents.r2d2.learner import R2D2Learner
from shoal.agents.r2d2.networks import RecurrentQNetwork
from shoal.agents.replay_builder import TrainFreqBuilder
from shoal.core.interfaces import Policy, Table
from shoal.core.seeding import derive_seed
from shoal.data import ReplayTable, SequenceAdder


class R2D2Builder(TrainFreqBuilder):
    """Builds recurrent Q-networks, a prioritized sequence table, R2D2 actors and the R2D2 learner."""

    config: R2D2Config

    @property
    def items_per_env_step(self) -> float:
        """One sequence per ``period`` env steps: the rate of an endless episode.

        Episode ends change it: the adder flushes a padded window there (more items), and the
        actor drops the windows whose real timesteps end within the burn-in (fewer); on
        CartPoleNoVel's early episodes of tens of steps the inserts come to about 0.7 to 0.75
        per ``period``, nearer one as episodes lengthen.
        """
        return 1.0 / self.config.period

    @property
    def replay_rate(self) -> tuple[float, int]:
        """``batch_size * gradient_steps * period / train_freq`` samples per sequence, from the sequences of
        ``learning_starts`` env steps on (at least a batch, at most a full table)."""
        c = self.config
        spi = c.batch_size * c.gradient_steps * c.period / c.train_freq
        return spi, min(max(c.learning_starts // c.period, c.batch_size), c.buffer_size)

    def make_networks(self) -> RecurrentQNetwork:
        c = self.config
        return RecurrentQNetwork(self.env_spec, c.encoder, c.lstm_hidden, c.activation, c.dueling)

    def make_policy(self, networks: nn.Module, evaluation: bool) -> Policy:
        assert isinstance(networks, RecurrentQNetwork)
        eps = self.config.eval_epsilon if evaluation else self.config.epsilon_final
        return RecurrentEpsilonGreedyPolicy(networks, eps, derive_seed(self.seed, "policy", evaluation))

    def make_tables(self) -> dict[str, Table]:
        c = self.config
        seed = derive_seed(self.seed, "replay")
        if c.prioritized:
            table = ReplayTable.prioritized(c.buffer_size, c.per_alpha, min_size=c.batch_size, seed=seed)
        else:
            table = ReplayTable.uniform(c.buffer_size, min_size=c.batch_size, seed=seed)
        return {"replay": table}

    def make_adder(self) -> SequenceAdder:
        """A sequence adder whose items are drained by the topology."""
        return sequence_adder(self.config)

    def make_actor(self, networks: nn.Module, num_envs: int, actor_id: int = 0, num_actors: int = 1,
                   seed: int = 0) -> R2D2Actor:
        assert isinstance(networks, RecurrentQNetwork)
        return R2D2Actor(networks, self.config, num_envs, seed, self.total_steps, actor_id, num_actors,
                         self.make_adder())

    def make_learner(self, networks: nn.Module, tables: dict[str, Table]) -> R2D2Learner:
        assert isinstance(networks, RecurrentQNetwork)
        table = next(iter(tables.values())) if tables else None
        return R2D2Learner(networks, self.config, table, self.total_steps, self.device)
