"""``pref_ppo``: PPO's pieces with the reward learned from preferences (:mod:`shoal.agents.preference`).

Everything of PPO is kept (actors, networks, policies, the update); each rollout's env rewards go
to the reward model and the learner gets a copy with the model's rewards
(:mod:`shoal.agents.preference.relabel`). Like ``pref_sac`` it runs on the ``local`` topology with
one learner.
"""

from __future__ import annotations

from torch import nn

from shoal.agents.pg.builder import ActorCriticBuilder
from shoal.agents.preference.config import PrefPPOConfig
from shoal.agents.preference.relabel import PreferenceBuilderMixin, PreferenceLearner
from shoal.agents.preference.trainer import PreferenceRewardModel
from shoal.core.interfaces import Learner, Table


class PrefPPOBuilder(PreferenceBuilderMixin, ActorCriticBuilder):
    """PPO on the learned reward: each rollout's rewards are replaced by the model's before the update."""

    config: PrefPPOConfig
    config_type = PrefPPOConfig

    @property
    def gradients_as_values(self) -> bool:
        return False  # the reward model lives with the one learner, not with gradient workers

    # The learner is a wrapper around the base class's learner, not one of its subclasses.
    def make_learner(self, networks: nn.Module, tables: dict[str, Table]) -> Learner:  # type: ignore[override]
        model = PreferenceRewardModel(self.config, self.env_spec, self.total_steps, 0, self.seed)
        return PreferenceLearner(super().make_learner(networks, tables), model, on_policy=True)
