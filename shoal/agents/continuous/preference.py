"""``pref_sac``: SAC's pieces with the reward learned from preferences (:mod:`shoal.agents.preference`).

Everything of SAC is kept (actors, networks, policies, the update); the replay table stores no
reward and sampled batches get the reward model's, and the learner asks for labels and retrains
the model as it goes (:mod:`shoal.agents.preference.relabel`). The reward model and its preference
source live in the learner node, so this runs on the ``local`` topology with one learner; the
terminal source needs the learner in the driver's process (the default in-process backend).
"""

from __future__ import annotations

from torch import nn

from shoal.agents.continuous.builder import ContinuousBuilder
from shoal.agents.preference.config import PrefSACConfig
from shoal.agents.preference.relabel import PreferenceBuilderMixin, PreferenceLearner, PreferenceTable
from shoal.agents.preference.trainer import PreferenceRewardModel
from shoal.core.interfaces import Learner, Table
from shoal.errors import ConfigError


class PrefSACBuilder(PreferenceBuilderMixin, ContinuousBuilder):
    """SAC on the learned reward: replay stores no reward; sampled batches get the model's."""

    config: PrefSACConfig
    config_type = PrefSACConfig

    def make_reward_model(self) -> PreferenceRewardModel:
        """The reward model; its first labels are asked for once learning starts."""
        return PreferenceRewardModel(self.config, self.env_spec, self.total_steps, self.config.learning_starts,
                                     self.seed)

    def make_tables(self) -> dict[str, Table]:
        return {name: PreferenceTable(t, self.make_reward_model()) for name, t in super().make_tables().items()}

    # The learner is a wrapper around the base class's learner, not one of its subclasses.
    def make_learner(self, networks: nn.Module, tables: dict[str, Table]) -> Learner:  # type: ignore[override]
        table = next(iter(tables.values()))
        if not isinstance(table, PreferenceTable):
            raise ConfigError("pref_sac's learner needs the replay table its builder made (make_tables)")
        return PreferenceLearner(super().make_learner(networks, tables), table.model, on_policy=False)
