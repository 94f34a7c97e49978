"""h-DQN's two Q-networks: DQN's :class:`QNetwork` at each level, on the goal space's features."""

from __future__ import annotations

import numpy as np
from torch import nn

from shoal.agents.dqn.networks import QNetwork
from shoal.agents.hdqn.goals import Goals
from shoal.core.types import EnvSpec


def level_specs(spec: EnvSpec, goals: Goals) -> tuple[EnvSpec, EnvSpec]:
    """The spaces the two DQNs see: ``(meta: features -> goal, controller: features + goal one-hot -> action)``."""
    meta = EnvSpec(f"{spec.env_id} (meta-controller)", (goals.feature_dim,), np.dtype(np.float32), True, goals.num_goals)
    controller = EnvSpec(f"{spec.env_id} (controller)", (goals.feature_dim + goals.num_goals,), np.dtype(np.float32), True,
                         spec.num_actions)
    return meta, controller


class HDQNNetworks(nn.Module):
    """``meta``: ``Q(s, g) [B, num_goals]``; ``controller``: ``Q((s, g), a) [B, num_actions]``.

    One module, so that parameters travel, checkpoint and evaluate as one state dict
    (keys ``meta.*`` and ``controller.*``).
    """

    def __init__(self, meta: QNetwork, controller: QNetwork) -> None:
        super().__init__()
        self.meta = meta
        self.controller = controller
