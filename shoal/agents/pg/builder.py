"""The actor-critic builder: everything PPO and A2C are, nothing about where they run."""

from __future__ import annotations

from torch import nn

from shoal.agents.pg.actor import GreedyPolicy, RolloutActor, SamplingPolicy
from shoal.agents.pg.config import ActorCriticConfig
from shoal.agents.pg.learner import ActorCriticLearner
from shoal.agents.pg.networks import ActorCritic
from shoal.agents.pg.recurrent import RecurrentActorCritic, RecurrentPolicy, RecurrentRolloutActor
from shoal.agents.pg.recurrent_learner import RecurrentActorCriticLearner
from shoal.core.interfaces import Builder, Policy, Table
from shoal.nets.normalize import RewardNormalizer


class ActorCriticBuilder(Builder):
    """Builds PPO or A2C pieces from an :class:`ActorCriticConfig` (LSTM ones with ``recurrent``:
    :mod:`shoal.agents.pg.recurrent`, trained on the local topology only)."""

    config: ActorCriticConfig

    @property
    def rollout_actor_critic(self) -> bool:
        return not self.config.recurrent  # the asynchronous topologies' rollouts carry no LSTM state

    @property
    def gradients_as_values(self) -> bool:
        return self.config.one_gradient_per_update and not self.config.recurrent

    @property
    def local_only(self) -> str | None:
        if self.config.recurrent:
            return "recurrent=true runs on the local topology only; drop --topology or set recurrent=false"
        return None

    @property
    def single_learner(self) -> str | None:
        if self.config.recurrent:
            return "recurrent=true trains with one learner; drop --num-learners or set it to 1"
        return None

    def make_reward_normalizer(self, num_envs: int) -> RewardNormalizer | None:
        """With ``normalize_reward``: rewards scaled by the running std of each copy's discounted return."""
        return RewardNormalizer(num_envs, self.config.gamma) if self.config.normalize_reward else None

    def make_networks(self) -> ActorCritic | RecurrentActorCritic:
        c = self.config
        if c.recurrent:
            return RecurrentActorCritic(self.env_spec, c.lstm_hidden, c.lstm_layers, c.hidden, c.activation,
                                        c.critic_lstm, c.log_std_init, c.normalize_obs)
        return ActorCritic(self.env_spec, c.hidden, c.activation, c.shared_torso, c.log_std_init, c.normalize_obs)

    def make_policy(self, networks: nn.Module, evaluation: bool) -> Policy:
        if isinstance(networks, RecurrentActorCritic):
            return RecurrentPolicy(networks, deterministic=evaluation, seed=self.seed)
        assert isinstance(networks, ActorCritic)
        return GreedyPolicy(networks) if evaluation else SamplingPolicy(networks, self.seed)

    def make_actor(self, networks: nn.Module, num_envs: int, actor_id: int = 0, num_actors: int = 1,
                   seed: int = 0) -> RolloutActor | RecurrentRolloutActor:
        if isinstance(networks, RecurrentActorCritic):
            c = self.config
            return RecurrentRolloutActor(networks, self.env_spec, c.rollout_length, num_envs, seed, c.sequence_length)
        assert isinstance(networks, ActorCritic)
        return RolloutActor(networks, self.env_spec, self.config.rollout_length, num_envs, seed, values_in_learner=True)

    def make_learner(self, networks: nn.Module, tables: dict[str, Table]) -> ActorCriticLearner:
        if isinstance(networks, RecurrentActorCritic):
            return RecurrentActorCriticLearner(networks, self.config, self.total_steps, self.seed, self.device)
        assert isinstance(networks, ActorCritic)
        return ActorCriticLearner(networks, self.config, self.total_steps, self.seed, self.device)
