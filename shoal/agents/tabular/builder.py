"""The tabular builder: Q-learning, Sarsa and Sarsa(lambda) on any env with Discrete observations and actions."""

from __future__ import annotations

from torch import nn

from shoal.agents.tabular.actor import TabularActor, TabularPolicy
from shoal.agents.tabular.config import TabularConfig
from shoal.agents.tabular.learner import TabularLearner
from shoal.agents.tabular.networks import QTable
from shoal.core.interfaces import Builder, Policy, Table
from shoal.errors import EnvError


class TabularBuilder(Builder):
    """Builds a Q-table, an epsilon-greedy actor and a learner applying ``config.update``.

    Runs on the ``local`` topology: every iteration the actor steps ``num_envs`` copies
    ``rollout_length`` times with the newest table and the learner applies the
    transitions in order (one learner step per hand-over).
    """

    config: TabularConfig
    name = ""
    """The algorithm's name in error messages (empty: the config's ``update``)."""

    def make_networks(self) -> QTable:
        spec = self.env_spec
        if spec.num_obs_states is None or not spec.discrete:
            obs = f"Discrete({spec.num_obs_states})" if spec.num_obs_states is not None else f"Box{list(spec.obs_shape)}"
            act = f"Discrete({spec.num_actions})" if spec.discrete else f"Box[{spec.num_actions}]"
            raise EnvError(f"{self.name or self.config.update} needs Discrete observations and actions, but {spec.env_id!r} has "
                           f"{obs} observations and {act} actions; use an env like FrozenLake-v1, CliffWalking-v1 "
                           "or shoal/GridMaze-v0, or a neural-network algorithm")
        return QTable(spec.num_obs_states, spec.num_actions, self.config.q_init)

    def make_policy(self, networks: nn.Module, evaluation: bool) -> Policy:
        assert isinstance(networks, QTable)
        eps = self.config.eval_epsilon if evaluation else (
            self.config.epsilon if self.config.epsilon_schedule == "constant" else self.config.epsilon_final)
        return TabularPolicy(networks, eps, self.seed)

    def make_actor(self, networks: nn.Module, num_envs: int, actor_id: int = 0, num_actors: int = 1, seed: int = 0) -> TabularActor:
        assert isinstance(networks, QTable)
        return TabularActor(networks, self.config, num_envs, seed, self.total_steps, num_actors, actor_id)

    def make_learner(self, networks: nn.Module, tables: dict[str, Table]) -> TabularLearner:
        assert isinstance(networks, QTable)
        return TabularLearner(networks, self.config, self.total_steps)
