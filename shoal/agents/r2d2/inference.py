"""One timestep of a recurrent Q-network for an actor's few env copies, numpy in and out.

:class:`NumpyRecurrentQ` evaluates the encoder, the LSTM cell and the head with numpy on
views of the network's parameters: for a handful of observations, torch's per-call
dispatch (an ``nn.LSTM`` call alone costs far more than its arithmetic) dominates.
:class:`TorchRecurrentQ` is the same interface over torch, for networks numpy cannot
evaluate here. Both take and return the LSTM state as numpy ``(h, c)``, each
``[num_layers, B, hidden]``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from shoal.agents.r2d2.networks import RecurrentQNetwork
from shoal.nets.numpy_mlp import numpy_activation, on_cpu_float32

NumpyState = tuple[np.ndarray, np.ndarray]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # = 1 / (1 + exp(-x)), without overflow warnings


def _view(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


class NumpyRecurrentQ:
    """``(Q [B, A], (h, c))`` of one timestep, computed with numpy on views of a :class:`RecurrentQNetwork`."""

    def __init__(self, net: RecurrentQNetwork) -> None:
        if not NumpyRecurrentQ.supports(net):
            raise ValueError("NumpyRecurrentQ needs a RecurrentQNetwork on the CPU with relu or tanh activations")
        self.encoder: list[tuple[np.ndarray, np.ndarray] | object] = []
        enc = net.torso.encoder
        for m in enc if isinstance(enc, nn.Sequential) else []:
            self.encoder.append((_view(m.weight).T, _view(m.bias)) if isinstance(m, nn.Linear) else numpy_activation(m))
        lstm = net.torso.lstm
        self.cells = [(_view(getattr(lstm, f"weight_ih_l{k}")).T, _view(getattr(lstm, f"weight_hh_l{k}")).T,
                       getattr(lstm, f"bias_ih_l{k}"), getattr(lstm, f"bias_hh_l{k}")) for k in range(lstm.num_layers)]
        self.dueling = net.dueling
        heads = (net.value, net.advantage) if net.dueling else (net.q,)
        self.heads = [(_view(h.weight).T, _view(h.bias)) for h in heads]
        self._source = [(p, p.data_ptr()) for p in net.parameters()]

    @staticmethod
    def supports(net: nn.Module) -> bool:
        """True for a CPU float32 RecurrentQNetwork whose encoder activations numpy can evaluate."""
        if not isinstance(net, RecurrentQNetwork) or not on_cpu_float32(net):
            return False
        enc = net.torso.encoder
        if isinstance(enc, nn.Identity):
            return True
        return isinstance(enc, nn.Sequential) and all(
            isinstance(m, nn.Linear) or numpy_activation(m) is not None for m in enc)

    def current(self) -> bool:
        """False once a parameter was re-pointed to other memory (the views are then stale)."""
        return all(p.data_ptr() == ptr for p, ptr in self._source)

    def __call__(self, obs: np.ndarray, state: NumpyState) -> tuple[np.ndarray, NumpyState]:
        x = np.asarray(obs, np.float32).reshape(len(obs), -1)
        for layer in self.encoder:
            x = x @ layer[0] + layer[1] if isinstance(layer, tuple) else layer(x)  # type: ignore[operator]
        h_all, c_all = state
        hs, cs = [], []
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.cells):
            gates = x @ w_ih + h_all[k] @ w_hh + (_view(b_ih) + _view(b_hh))
            i, f, g, o = np.split(gates, 4, axis=-1)
            c = _sigmoid(f) * c_all[k] + _sigmoid(i) * np.tanh(g)
            x = _sigmoid(o) * np.tanh(c)
            hs.append(x)
            cs.append(c)
        if self.dueling:
            v = x @ self.heads[0][0] + self.heads[0][1]
            adv = x @ self.heads[1][0] + self.heads[1][1]
            q = v + adv - adv.mean(-1, keepdims=True)
        else:
            q = x @ self.heads[0][0] + self.heads[0][1]
        return q, (np.stack(hs).astype(np.float32), np.stack(cs).astype(np.float32))


class TorchRecurrentQ:
    """The interface of :class:`NumpyRecurrentQ` over the torch network (any device or activation)."""

    def __init__(self, net: RecurrentQNetwork) -> None:
        self.net = net

    def current(self) -> bool:
        return True

    @torch.inference_mode()
    def __call__(self, obs: np.ndarray, state: NumpyState) -> tuple[np.ndarray, NumpyState]:
        dev = next(self.net.parameters()).device
        q, (h, c) = self.net.step(torch.as_tensor(np.asarray(obs, np.float32), device=dev),
                                  (torch.as_tensor(state[0], device=dev), torch.as_tensor(state[1], device=dev)))
        return q.cpu().numpy(), (h.cpu().numpy(), c.cpu().numpy())


def recurrent_q_function(net: RecurrentQNetwork) -> NumpyRecurrentQ | TorchRecurrentQ:
    """Numpy inference for eligible networks, torch otherwise."""
    return NumpyRecurrentQ(net) if NumpyRecurrentQ.supports(net) else TorchRecurrentQ(net)


def zero_state(net: RecurrentQNetwork, batch: int) -> NumpyState:
    """Zero numpy ``(h, c)`` for ``batch`` copies."""
    shape = (net.num_layers, batch, net.torso.hidden)
    return np.zeros(shape, np.float32), np.zeros(shape, np.float32)
