"""Small MLPs evaluated with numpy on views of torch parameters: the actors' fast inference path.

For a few observations and a small MLP, torch's per-operation dispatch (several
microseconds per op) costs more than the arithmetic; numpy on views of the very same
parameter tensors is 2-3x faster. The views share memory with the tensors, so
parameters copied in place (``load_state_dict``, ``Tensor.copy_``) are seen without any
refresh; re-pointing a parameter (``p.data = ...``, ``.to(device)``) is not, which
:meth:`NumpyMLP.current` detects. Used by the on-policy engine (``shoal.agents.pg.inference``)
and by the DQN, DDPG, TD3 and SAC actors.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Array = np.ndarray
Activation = Callable[[Array], Array]
#: One layer: ``(weight [in, out], bias broadcastable to [out])``, both numpy views.
Layer = tuple[Array, Array]


def _relu(x: Array) -> Array:
    return np.maximum(x, 0, out=x)


_MODULES: dict[str, Activation] = {"FastTanh": np.tanh, "Tanh": np.tanh, "ReLU": _relu}
_FUNCTIONS: dict[Callable, Activation] = {torch.tanh: np.tanh, torch.relu: _relu, F.relu: _relu}


def numpy_activation(act: nn.Module | Callable) -> Activation | None:
    """The numpy form of a torch activation module or function, or None if it has none here."""
    if isinstance(act, nn.Module):
        return _MODULES.get(type(act).__name__)
    return _FUNCTIONS.get(act)


def on_cpu_float32(module: nn.Module) -> bool:
    """True when every parameter and floating buffer of ``module`` is a float32 CPU tensor."""
    tensors = list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point() and b.dim() > 0]
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def _view(t: torch.Tensor) -> Array:
    return t.detach().numpy()


def linear_layers(linears: Iterable[nn.Module]) -> list[Layer]:
    """``(weight.T, bias)`` views of ``nn.Linear`` layers (``x @ weight.T + bias`` is the layer)."""
    return [(_view(lin.weight).T, _view(lin.bias)) for lin in linears]  # type: ignore[arg-type]


def stacked_layers(weights: Iterable[torch.Tensor], biases: Iterable[torch.Tensor], k: int) -> list[Layer]:
    """Views of member ``k`` of stacked layers (weights ``[n, in, out]``, biases ``[n, 1, out]``)."""
    return [(_view(w)[k], _view(b)[k]) for w, b in zip(weights, biases)]


def split_sequential(seq: nn.Module) -> tuple[list[nn.Linear], Activation | None] | None:
    """``Linear, act, Linear, ..., Linear`` (or one Linear) as its linears and activation; None otherwise."""
    if isinstance(seq, nn.Linear):
        return [seq], None
    if not isinstance(seq, nn.Sequential):
        return None
    mods = list(seq)
    linears, acts = mods[0::2], mods[1::2]
    if not linears or not all(isinstance(m, nn.Linear) for m in linears) or len(acts) != len(linears) - 1:
        return None
    fns = [numpy_activation(a) for a in acts]
    if any(f is None for f in fns) or len({type(a) for a in acts}) > 1:
        return None
    return linears, (fns[0] if fns else None)  # type: ignore[return-value]


class NumpyMLP:
    """``act(... act(x @ W1 + b1) ...) @ Wn + bn`` with numpy; ``activate_last`` also activates the output.

    ``layers`` are numpy views of the torch parameters (see :func:`linear_layers` and
    :func:`stacked_layers`); ``source`` are those tensors, used only by :meth:`current`.
    """

    def __init__(self, layers: Sequence[Layer], act: Activation | None, activate_last: bool = False,
                 source: Sequence[torch.Tensor] = ()) -> None:
        if act is None and (activate_last or len(layers) > 1):
            raise ValueError("NumpyMLP needs an activation between layers")
        self.layers = list(layers)
        self.act = act
        self.activate_last = activate_last
        self._source = [(t, t.data_ptr()) for t in source]

    def __call__(self, x: Array) -> Array:
        """The network's output for a ``[B, in]`` float32 batch."""
        h = x
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            h = h @ w  # 2-D matmuls go to BLAS
            h += b
            if i < last or self.activate_last:
                h = self.act(h)  # type: ignore[misc]
        return h

    def current(self) -> bool:
        """False once a source tensor was re-pointed to other memory (the views are then stale)."""
        return all(t.data_ptr() == p for t, p in self._source)


def mlp_from_module(seq: nn.Module) -> NumpyMLP | None:
    """A :class:`NumpyMLP` over an ``nn.Linear`` or a ``Linear, act, ..., Linear`` ``nn.Sequential`` (None otherwise)."""
    split = split_sequential(seq)
    if split is None:
        return None
    linears, act = split
    return NumpyMLP(linear_layers(linears), act, source=[lin.weight for lin in linears])


class NumpyObsNorm:
    """``clip((x - mean) / sqrt(var + eps), -clip, clip)`` on views of an ``ObsNormalizer``'s buffers."""

    def __init__(self, norm: nn.Module) -> None:
        self.enabled = bool(norm.enabled)
        self.mean, self.var = _view(norm.mean), _view(norm.var)  # type: ignore[arg-type]
        self.epsilon, self.clip = float(norm.epsilon), float(norm.clip)  # type: ignore[arg-type]

    def __call__(self, x: Array) -> Array:
        """Normalised float32 observations (the input itself, as float32, when disabled)."""
        x = x.astype(np.float32, copy=False)
        if not self.enabled:
            return x
        return np.clip((x - self.mean) / np.sqrt(self.var + self.epsilon), -self.clip, self.clip).astype(
            np.float32, copy=False)
