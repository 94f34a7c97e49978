"""The h-DQN builder: a DQN builder per level (networks, replay table, learner) and the goal bookkeeping actor.

Runs on the ``local`` topology: each iteration an actor runs ``train_freq`` env steps and
hands both levels' transitions over in one drain; the learner node calls
:meth:`HDQNLearner.step` once per hand-over, which inserts them into the two tables the
learner holds and takes each level's owed DQN updates.
"""

from __future__ import annotations

from torch import nn

from shoal.agents.dqn.builder import DQNBuilder
from shoal.agents.hdqn.actor import HDQNActor, HDQNPolicy
from shoal.agents.hdqn.config import HDQNConfig
from shoal.agents.hdqn.goals import Goals
from shoal.agents.hdqn.learner import HDQNLearner
from shoal.agents.hdqn.networks import HDQNNetworks, level_specs
from shoal.core.interfaces import Builder, Policy, Table
from shoal.core.seeding import derive_seed
from shoal.core.types import EnvSpec
from shoal.errors import EnvError


class HDQNBuilder(Builder):
    """Builds both levels' Q-networks and learners from DQN's builder, the h-DQN actor and policy."""

    config: HDQNConfig

    def __init__(self, config: HDQNConfig, env_spec: EnvSpec, total_steps: int = 0, seed: int = 0,
                 device: str = "cpu") -> None:
        super().__init__(config, env_spec, total_steps, seed, device)
        if not env_spec.discrete:
            raise EnvError(f"hdqn needs a Discrete action space, but {env_spec.env_id!r} has {env_spec.num_actions}-dimensional "
                           "continuous actions; use a continuous-control algorithm or discretise the actions")
        self.goals = Goals(env_spec, config.goal_fn, config.num_goals)
        meta_spec, controller_spec = level_specs(env_spec, self.goals)
        self.levels = {"meta": DQNBuilder(config, meta_spec, total_steps, derive_seed(seed, "meta"), device),
                       "controller": DQNBuilder(config, controller_spec, total_steps, derive_seed(seed, "controller"), device)}

    @property
    def steps_per_iteration(self) -> int:
        """Vector steps per actor per iteration: ``train_freq`` env steps (at least one vector step)."""
        return max(1, self.config.train_freq // self.num_envs)

    @property
    def local_only(self) -> str | None:
        return "h-DQN's learner holds both levels' replay tables itself; run it on the local topology"

    @property
    def single_learner(self) -> str | None:
        return "h-DQN trains its two Q-networks in one learner; drop --num-learners"

    def make_networks(self) -> HDQNNetworks:
        return HDQNNetworks(self.levels["meta"].make_networks(), self.levels["controller"].make_networks())

    def make_policy(self, networks: nn.Module, evaluation: bool) -> Policy:
        """Greedy at both levels for evaluation (``eval_epsilon``, 0 by default); otherwise the final training
        rates (``epsilon_final`` for goals, ``controller_epsilon_min`` for actions)."""
        assert isinstance(networks, HDQNNetworks)
        c = self.config
        meta_eps, controller_eps = (c.eval_epsilon, c.eval_epsilon) if evaluation else (c.epsilon_final, c.controller_epsilon_min)
        return HDQNPolicy(networks, self.goals, meta_eps, controller_eps, derive_seed(self.seed, "policy", evaluation))

    def make_actor(self, networks: nn.Module, num_envs: int, actor_id: int = 0, num_actors: int = 1,
                   seed: int = 0) -> HDQNActor:
        assert isinstance(networks, HDQNNetworks)
        return HDQNActor(networks, self.config, self.goals, num_envs, seed, self.total_steps, actor_id, num_actors)

    def make_learner(self, networks: nn.Module, tables: dict[str, Table]) -> HDQNLearner:
        """The learner with both levels' tables (its own: the learner node routes no data into tables)."""
        assert isinstance(networks, HDQNNetworks)
        own = {k: next(iter(b.make_tables().values())) for k, b in self.levels.items()}
        meta = self.levels["meta"].make_learner(networks.meta, {"replay": own["meta"]})
        controller = self.levels["controller"].make_learner(networks.controller, {"replay": own["controller"]})
        return HDQNLearner(networks, self.config, meta, controller, own)
