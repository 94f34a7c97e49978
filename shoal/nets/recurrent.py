"""Recurrent torsos: an LSTM whose state is reset where episodes start, carried everywhere else.

Sequences are time-major: ``x[T, B, D]`` with ``starts[T, B]`` True where timestep ``t`` of
column ``b`` begins a new episode. The state entering such a timestep is zeroed, so one
forward pass over a rollout that crosses episode boundaries computes exactly what stepping
the env copies one at a time would. The state after the last timestep is returned, so the
next unroll (or the next action) continues from it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from shoal.nets.torsos import mlp_layers

#: ``(h, c)``, each ``[num_layers, B, hidden]``.
LSTMState = tuple[torch.Tensor, torch.Tensor]


class LSTMTorso(nn.Module):
    """An optional MLP encoder, then an ``nn.LSTM`` of ``hidden`` units (``num_layers`` deep).

    ``forward(x[T, B, ...], state, starts[T, B]) -> (features[T, B, hidden], state)``.
    Where no episode starts inside the sequence, the LSTM runs over all ``T`` timesteps in
    one call; otherwise it runs over the segments between the timesteps where some column
    starts, zeroing the state of the columns that start there (the result equals the
    one-step-at-a-time loop, tested).
    """

    def __init__(self, in_dim: int, hidden: int = 128, encoder: Sequence[int] = (), act: str = "tanh",
                 num_layers: int = 1) -> None:
        super().__init__()
        self.encoder = mlp_layers(in_dim, encoder, act) if encoder else nn.Identity()
        d = encoder[-1] if encoder else in_dim
        self.lstm = nn.LSTM(d, hidden, num_layers=num_layers)
        for name, p in self.lstm.named_parameters():
            if "weight" in name:
                nn.init.orthogonal_(p, 1.0)
            else:
                nn.init.zeros_(p)
        self.in_dim, self.hidden, self.num_layers = in_dim, hidden, num_layers
        self.out_dim = hidden

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> LSTMState:
        """Zero ``(h, c)`` for ``batch`` columns."""
        z = torch.zeros(self.num_layers, batch, self.hidden, device=device)
        return z, z.clone()

    def forward(self, x: torch.Tensor, state: LSTMState, starts: torch.Tensor) -> tuple[torch.Tensor, LSTMState]:
        T, B = x.shape[:2]
        z = self.encoder(x.reshape(T, B, -1).float())
        starts = starts.to(torch.bool).reshape(T, B)
        h, c = state
        # Segment boundaries: timesteps where some column starts an episode (t = 0 always opens one).
        cuts = torch.nonzero(starts[1:].any(dim=1)).flatten().add(1).tolist()
        outs = []
        prev = 0
        for end in [*cuts, T]:
            keep = (~starts[prev]).to(h.dtype).view(1, B, 1)
            h, c = h * keep, c * keep
            out, (h, c) = self.lstm(z[prev:end], (h, c))
            outs.append(out)
            prev = end
        return (outs[0] if len(outs) == 1 else torch.cat(outs)), (h, c)

    def step(self, x: torch.Tensor, state: LSTMState, starts: torch.Tensor) -> tuple[torch.Tensor, LSTMState]:
        """One timestep for ``B`` columns: ``x[B, ...]``, ``starts[B]`` -> ``(features[B, hidden], state)``."""
        out, state = self.forward(x.unsqueeze(0), state, starts.reshape(1, -1))
        return out[0], state
