"""The builder of DDPG, TD3, SAC, D4PG and their Ape-X forms: everything they are, nothing about where they run.

On the ``local`` topology the actors hand their n-step transitions over every iteration;
the learner node inserts them into the replay table from :meth:`make_tables` (priorities
included when actors compute them) and runs :meth:`learner_steps_due` gradient steps,
which implements ``learning_starts`` and the update-to-data ratio.
"""

from __future__ import annotations

import math

from torch import nn

from shoal.agents.continuous.actor import ContinuousActor, ContinuousPolicy
from shoal.agents.continuous.config import D4PGConfig, DDPGConfig, OffPolicyConfig, SACConfig
from shoal.agents.continuous.learner import D4PGLearner, DPGLearner, OffPolicyLearner, SACLearner
from shoal.agents.continuous.networks import ContinuousNetworks, check_spec
from shoal.agents.replay_builder import ReplayBuilder
from shoal.core.interfaces import Policy, Table
from shoal.core.schedules import per_actor_exponent
from shoal.core.seeding import derive_seed
from shoal.core.types import EnvSpec
from shoal.data import NStepTransitionAdder, ReplayTable
from shoal.errors import ConfigError
from shoal.returns.categorical import categorical_support


class ContinuousBuilder(ReplayBuilder):
    """Builds DDPG/TD3 (a :class:`DDPGConfig`), D4PG (a :class:`D4PGConfig`) or SAC (a :class:`SACConfig`) pieces."""

    config: OffPolicyConfig

    def __init__(self, config: OffPolicyConfig, env_spec: EnvSpec, total_steps: int = 0, seed: int = 0,
                 device: str = "cpu") -> None:
        super().__init__(config, env_spec, total_steps, seed, device)
        if not isinstance(config, (DDPGConfig, SACConfig)):
            raise ConfigError(f"ContinuousBuilder needs a DDPGConfig, TD3Config, D4PGConfig or SACConfig, "
                              f"got {type(config).__name__}")
        check_spec(env_spec)

    @property
    def stochastic(self) -> bool:
        return isinstance(self.config, SACConfig)

    @property
    def replay_rate(self) -> tuple[float, int]:
        """``batch_size * replay_ratio`` samples per item, from ``max(learning_starts + 1, batch_size)`` items
        (at most a full table)."""
        c = self.config
        return c.batch_size * c.replay_ratio, min(max(c.learning_starts + 1, c.batch_size), c.buffer_size)

    def learner_steps_due(self, env_steps: int, learner_steps: int) -> int:
        """``replay_ratio`` gradient steps per env step after the first ``learning_starts`` env steps."""
        c = self.config
        if env_steps <= c.learning_starts:
            return 0
        return max(0, math.floor((env_steps - c.learning_starts) * c.replay_ratio) - learner_steps)

    def make_networks(self) -> ContinuousNetworks:
        c = self.config
        num_critics = c.num_critics  # type: ignore[attr-defined]  # DDPGConfig and SACConfig both have it
        support = categorical_support(c.v_min, c.v_max, c.num_atoms) if isinstance(c, D4PGConfig) else None
        return ContinuousNetworks(self.env_spec, c.hidden, c.activation, num_critics, self.stochastic,
                                  c.normalize_obs, getattr(c, "alpha", 1.0), support)

    def make_tables(self) -> dict[str, Table]:
        c = self.config
        seed = derive_seed(self.seed, "replay")
        if c.prioritized:
            return {"replay": ReplayTable.prioritized(c.buffer_size, alpha=c.priority_alpha, min_size=1, seed=seed)}
        return {"replay": ReplayTable.uniform(c.buffer_size, min_size=1, seed=seed)}

    def make_adder(self) -> NStepTransitionAdder:
        """The adder an actor feeds: n-step transitions, drained by the topology every hand-over."""
        return NStepTransitionAdder(self.config.n_step, self.config.gamma)

    def make_policy(self, networks: nn.Module, evaluation: bool) -> Policy:
        assert isinstance(networks, ContinuousNetworks)
        return ContinuousPolicy(networks, evaluation, getattr(self.config, "noise_sigma", 0.0), self.seed)

    def actor_sigma(self, actor_id: int, num_actors: int) -> float:
        """Exploration noise std of actor ``actor_id`` (0 for SAC, which samples its own policy)."""
        c = self.config
        if not isinstance(c, DDPGConfig):
            return 0.0
        return per_actor_exponent(c.noise_sigma, actor_id, num_actors, c.actor_noise_alpha)

    def make_actor(self, networks: nn.Module, num_envs: int, actor_id: int = 0, num_actors: int = 1,
                   seed: int = 0) -> ContinuousActor:
        assert isinstance(networks, ContinuousNetworks)
        c = self.config
        random_steps = math.ceil(c.learning_starts / max(1, num_actors)) if c.random_warmup else 0
        return ContinuousActor(networks, c, num_envs, seed, self.actor_sigma(actor_id, num_actors),
                               random_steps, c.actor_priorities, self.make_adder())

    def make_learner(self, networks: nn.Module, tables: dict[str, Table]) -> OffPolicyLearner:
        assert isinstance(networks, ContinuousNetworks)
        table = next(iter(tables.values()))  # the local replay table, or the Ape-X learner's batch feed
        cls = SACLearner if self.stochastic else D4PGLearner if isinstance(self.config, D4PGConfig) else DPGLearner
        seed = derive_seed(self.seed, "learner")
        return cls(networks, self.config, table, self.total_steps, seed, self.device)  # type: ignore[arg-type]
