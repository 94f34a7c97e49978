"""The Q-table as a module, so it travels and is checkpointed like any network."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class QTable(nn.Module):
    """A ``[num_states, num_actions]`` float64 table held in the buffer ``q``.

    Learners and actors update it through :meth:`numpy` (a view sharing memory), so
    the update loop runs in numpy while ``state_dict()`` stays a torch state dict.
    """

    q: torch.Tensor

    def __init__(self, num_states: int, num_actions: int, init: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("q", torch.full((num_states, num_actions), float(init), dtype=torch.float64))

    @property
    def num_states(self) -> int:
        return int(self.q.shape[0])

    @property
    def num_actions(self) -> int:
        return int(self.q.shape[1])

    def numpy(self) -> np.ndarray:
        """A numpy view of the table (writes go to the buffer)."""
        return self.q.numpy()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values ``[B, A]`` of a batch of state indices."""
        return self.q[obs.long()]
