"""The recurrent Q-network: MLP encoder, LSTM, plain or dueling Q head."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from shoal.agents.dqn.loss import dueling_aggregate
from shoal.core.types import EnvSpec
from shoal.errors import EnvError
from shoal.nets.recurrent import LSTMState, LSTMTorso


class RecurrentQNetwork(nn.Module):
    """``forward(obs[T, B, ...], state, starts[T, B]) -> (Q[T, B, A], state)``, time-major.

    The LSTM state is zeroed entering every timestep where ``starts`` is True (an episode
    begins); ``step`` runs one timestep for ``B`` columns and ``initial_state`` gives zeros.
    """

    def __init__(self, spec: EnvSpec, encoder: tuple[int, ...] = (64,), lstm_hidden: int = 64,
                 activation: str = "relu", dueling: bool = True) -> None:
        super().__init__()
        if not spec.discrete:
            raise EnvError(f"R2D2 needs a Discrete action space, but {spec.env_id!r} has {spec.num_actions}-dimensional "
                           "continuous actions; use a continuous-control algorithm or discretise the actions")
        self.obs_shape = tuple(spec.obs_shape)
        in_dim = int(math.prod(self.obs_shape)) if self.obs_shape else 1
        self.torso = LSTMTorso(in_dim, lstm_hidden, encoder, activation)
        self.num_actions = spec.num_actions
        self.dueling = dueling
        if dueling:
            self.value = nn.Linear(lstm_hidden, 1)
            self.advantage = nn.Linear(lstm_hidden, spec.num_actions)
        else:
            self.q = nn.Linear(lstm_hidden, spec.num_actions)

    @property
    def num_layers(self) -> int:
        """LSTM layers (the leading axis of each state tensor)."""
        return self.torso.num_layers

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> LSTMState:
        """Zero ``(h, c)``, each ``[num_layers, batch, lstm_hidden]``."""
        return self.torso.initial_state(batch, device)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Q-values from LSTM features ``[..., lstm_hidden]``."""
        if self.dueling:
            return dueling_aggregate(self.value(features), self.advantage(features))
        return self.q(features)

    def forward(self, obs: torch.Tensor, state: LSTMState, starts: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, LSTMState]:
        T, B = obs.shape[:2]
        if starts is None:
            starts = torch.zeros(T, B, dtype=torch.bool, device=obs.device)
        features, state = self.torso(obs.reshape(T, B, -1), state, starts)
        return self.head(features), state

    def step(self, obs: torch.Tensor, state: LSTMState, starts: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, LSTMState]:
        """One timestep: ``obs[B, ...]`` -> ``(Q[B, A], state)``."""
        q, state = self.forward(obs.unsqueeze(0), state, None if starts is None else starts.reshape(1, -1))
        return q[0], state


def stored_state(items: dict, device: torch.device | str = "cpu") -> LSTMState:
    """The recurrent state stored with a batch of sequences (``lstm_h``, ``lstm_c``: ``[B, layers, H]``)
    as the network's ``(h, c)``, each ``[layers, B, H]``. Read-only arrays (batches from another
    process) are copied first: torch cannot share their memory."""
    h, c = (_as_tensor(items[k]).to(device).float().transpose(0, 1).contiguous() for k in ("lstm_h", "lstm_c"))
    return h, c


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    x = np.asarray(x)
    return torch.from_numpy(x if x.flags.writeable else x.copy())


def burn_in_and_unroll(net: RecurrentQNetwork, obs: torch.Tensor, state: LSTMState, burn_in: int
                       ) -> torch.Tensor:
    """Q-values ``[T - burn_in, B, A]`` of the timesteps after the burn-in of sequences ``obs[T, B, ...]``.

    The first ``burn_in`` timesteps only refresh ``state`` (run without autograd, the result
    detached: no gradient flows into them); the rest is unrolled from the refreshed state
    with autograd as the caller's mode says.
    """
    if burn_in > 0:
        with torch.no_grad():
            _, (h, c) = net(obs[:burn_in], state)
        state = (h.detach(), c.detach())
    q, _ = net(obs[burn_in:], state)
    return q
