"""The builder of the offline algorithms: a dataset instead of actors, the online agents' networks and learners.

The dataset (``config.dataset``) is read when the learner is built, split into training
and validation episodes, and handed to the learner: as a replay table holding exactly the
training transitions (CQL, naive offline DQN/SAC, which then sample it as the online
learners sample theirs) or as arrays (behaviour cloning). A run's steps are learner updates:
:meth:`OfflineBuilder.learner_steps_due` makes every "env step" the offline topology
reports one update.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from shoal.agents.continuous.actor import ContinuousPolicy
from shoal.agents.continuous.config import SACConfig
from shoal.agents.continuous.networks import ContinuousNetworks, check_spec
from shoal.agents.dqn.actor import EpsilonGreedyPolicy
from shoal.agents.dqn.config import DQNConfig
from shoal.agents.dqn.networks import QNetwork
from shoal.agents.offline.bc import BCLearner
from shoal.agents.offline.config import BCConfig, CQLConfig, NaiveOfflineConfig, OfflineConfig
from shoal.agents.offline.cql import CQLDQNLearner, CQLSACLearner
from shoal.core.interfaces import Builder, Learner, Policy, Table
from shoal.core.seeding import derive_seed
from shoal.core.types import EnvSpec
from shoal.data.offline import Transitions, load_transitions, split_episodes, transitions_table
from shoal.errors import ConfigError


class OfflineBuilder(Builder):
    """Builds behaviour cloning (a :class:`BCConfig`) or CQL / naive offline DQN and SAC (a :class:`CQLConfig`)."""

    config: OfflineConfig

    def __init__(self, config: OfflineConfig, env_spec: EnvSpec, total_steps: int = 0, seed: int = 0,
                 device: str = "cpu") -> None:
        super().__init__(config, env_spec, total_steps, seed, device)
        if not isinstance(config, (BCConfig, CQLConfig)):
            raise ConfigError(f"OfflineBuilder needs a BCConfig or CQLConfig, got {type(config).__name__}")
        if not env_spec.discrete:
            check_spec(env_spec)
        self._data: tuple[Transitions, Transitions | None] | None = None

    # -- what the topology asks --------------------------------------------------------------------
    @property
    def offline(self) -> bool:
        """The offline topology runs these builders: they learn from a dataset, with no actors."""
        return True

    @property
    def discrete(self) -> bool:
        return bool(self.env_spec.discrete)

    def learner_steps_due(self, env_steps: int, learner_steps: int) -> int:
        """Offline, a run's steps are learner updates: every step reported is one update."""
        return max(0, env_steps - learner_steps)

    @property
    def steps_per_iteration(self) -> int:
        """Learner updates per runner iteration (``updates_per_iteration``)."""
        return self.config.updates_per_iteration

    # -- the agent's pieces ------------------------------------------------------------------------
    def sac_config(self) -> SACConfig:
        """The SAC settings the continuous learners run with (from this config's fields)."""
        c = self.config
        assert isinstance(c, (BCConfig, CQLConfig))
        if isinstance(c, CQLConfig):
            return SACConfig(gamma=c.gamma, tau=c.tau, actor_lr=c.actor_lr, critic_lr=c.critic_lr, alpha_lr=c.alpha_lr,
                             batch_size=c.batch_size, hidden=c.hidden, activation=c.activation, learning_starts=0,
                             random_warmup=False, normalize_obs=c.normalize_obs, checkpoint_replay=False)
        return SACConfig(hidden=c.hidden, activation=c.activation, batch_size=c.batch_size, learning_starts=0,
                         random_warmup=False, checkpoint_replay=False)

    def dqn_config(self) -> DQNConfig:
        """The DQN settings the discrete CQL learner runs with (from this config's fields)."""
        c = self.config
        assert isinstance(c, CQLConfig)
        return DQNConfig(batch_size=c.batch_size, gamma=c.gamma, lr=c.lr, loss=c.loss, max_grad_norm=c.max_grad_norm,
                         target_update_interval=c.target_update_interval, tau=1.0, double=c.double, hidden=c.hidden,
                         activation=c.activation, learning_starts=0, train_freq=1, gradient_steps=1,
                         checkpoint_replay=False)

    def make_networks(self) -> nn.Module:
        c = self.config
        if self.discrete:
            return QNetwork(self.env_spec, c.hidden, c.activation)
        s = self.sac_config()
        return ContinuousNetworks(self.env_spec, s.hidden, s.activation, s.num_critics, True, s.normalize_obs, s.alpha)

    def make_policy(self, networks: nn.Module, evaluation: bool) -> Policy:
        """The greedy policy: argmax of the logits or Q values, or ``tanh(mean)`` scaled to the bounds."""
        if isinstance(networks, QNetwork):
            return EpsilonGreedyPolicy(networks, 0.0, derive_seed(self.seed, "policy", evaluation))
        assert isinstance(networks, ContinuousNetworks)
        return ContinuousPolicy(networks, True, 0.0, derive_seed(self.seed, "policy", evaluation))

    def make_actor(self, networks: nn.Module, num_envs: int, actor_id: int = 0, num_actors: int = 1,
                   seed: int = 0) -> Any:
        raise ConfigError("offline algorithms learn from a dataset and have no actors; "
                          "train them on the offline topology (drop --topology)")

    def dataset(self) -> tuple[Transitions, Transitions | None]:
        """``(training, validation)`` transitions of the dataset, read once; continuous actions rescaled to ``[-1, 1]``."""
        if self._data is None:
            c = self.config
            if not c.dataset:
                raise ConfigError("offline algorithms need a dataset; pass --dataset ID_OR_PATH (see `shoal record`)")
            data = load_transitions(c.dataset)
            self._check_fits(data)
            if not self.discrete:
                low = np.asarray(self.env_spec.action_low, np.float32)
                high = np.asarray(self.env_spec.action_high, np.float32)
                data.action = np.clip((data.action.reshape(len(data), -1) - (high + low) / 2) / ((high - low) / 2),
                                      -1.0, 1.0).astype(np.float32)
            self._data = split_episodes(data, c.validation, derive_seed(self.seed, "validation"))
        return self._data

    def _check_fits(self, data: Transitions) -> None:
        spec, c = self.env_spec, self.config
        if tuple(data.obs.shape[1:]) != tuple(spec.obs_shape):
            raise ConfigError(f"dataset {c.dataset!r} has observations of shape {tuple(data.obs.shape[1:])}, but "
                              f"{spec.env_id} has {tuple(spec.obs_shape)}; pass the env it was recorded on with --env")
        if self.discrete != np.issubdtype(data.action.dtype, np.integer):
            kind = "discrete" if np.issubdtype(data.action.dtype, np.integer) else "continuous"
            raise ConfigError(f"dataset {c.dataset!r} holds {kind} actions, but {spec.env_id} does not; "
                              "pass the env it was recorded on with --env")
        if self.discrete and int(data.action.max()) >= spec.num_actions:
            raise ConfigError(f"dataset {c.dataset!r} has action {int(data.action.max())}, but {spec.env_id} has "
                              f"{spec.num_actions} actions; pass the env it was recorded on with --env")

    def make_tables(self) -> dict[str, Table]:
        """The training transitions as a uniform replay table (none for behaviour cloning, which reads arrays)."""
        if isinstance(self.config, BCConfig):
            return {}
        train, _ = self.dataset()
        return {"dataset": transitions_table(train, self.config.gamma, derive_seed(self.seed, "replay"),
                                             min_size=self.config.batch_size)}

    def make_learner(self, networks: nn.Module, tables: dict[str, Table]) -> Learner:
        c = self.config
        seed = derive_seed(self.seed, "learner")
        if isinstance(c, BCConfig):
            train, val = self.dataset()
            return BCLearner(networks, c, train.items(0.0), None if val is None else val.items(0.0), seed, self.device,
                             self.total_steps)
        assert isinstance(c, CQLConfig)
        table = tables["dataset"]
        alpha = c.alpha_for(self.discrete)
        if self.discrete:
            assert isinstance(networks, QNetwork)
            return CQLDQNLearner(networks, self.dqn_config(), table, self.total_steps, alpha, self.device)
        assert isinstance(networks, ContinuousNetworks)
        return CQLSACLearner(networks, self.sac_config(), table, self.total_steps, seed, alpha, c.num_sampled_actions,
                             c.lagrange, c.target_action_gap, c.alpha_lr, self.device,
                             c.importance_sample, c.bc_steps)


class OfflineDQNBuilder(OfflineBuilder):
    """Naive offline DQN: discrete actions only."""

    def __init__(self, config: OfflineConfig, env_spec: EnvSpec, total_steps: int = 0, seed: int = 0,
                 device: str = "cpu") -> None:
        if not env_spec.discrete:
            raise ConfigError(f"offline_dqn needs discrete actions, but {env_spec.env_id} has continuous ones; "
                              "use offline_sac")
        super().__init__(config, env_spec, total_steps, seed, device)
        assert isinstance(config, NaiveOfflineConfig)


class OfflineSACBuilder(OfflineBuilder):
    """Naive offline SAC: continuous actions only."""

    def __init__(self, config: OfflineConfig, env_spec: EnvSpec, total_steps: int = 0, seed: int = 0,
                 device: str = "cpu") -> None:
        if env_spec.discrete:
            raise ConfigError(f"offline_sac needs continuous actions, but {env_spec.env_id} has discrete ones; "
                              "use offline_dqn")
        super().__init__(config, env_spec, total_steps, seed, device)
        assert isinstance(config, NaiveOfflineConfig)
