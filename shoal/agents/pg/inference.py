"""Action selection engines for the on-policy actor: torch, or numpy for small MLP batches.

For a few env copies and a small MLP, torch's per-operation overhead (several
microseconds per op) costs more than the arithmetic; the same network evaluated with
numpy on views of the very same parameter tensors is 2-3x faster (the shared engine is
``shoal.nets.numpy_mlp``, also used by the off-policy actors). Both engines share
one interface and return numpy arrays; which one an actor uses depends only on the
network and the batch size, never on the backend, so runs stay reproducible.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch

from shoal.agents.pg.networks import ActorCritic
from shoal.nets.heads import LOG_STD_MAX, LOG_STD_MIN, GaussianHead
from shoal.nets.numpy_mlp import NumpyMLP, NumpyObsNorm, linear_layers, numpy_activation, on_cpu_float32, stacked_layers
from shoal.nets.torsos import ParallelMLP

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
#: Up to this many env copies per actor, eligible networks are evaluated with numpy.
NUMPY_MAX_BATCH = 1 << 30  # numpy wins at every batch size measured on CPU (8 to 4096 copies)


class TorchEngine:
    """Evaluates the network with torch (any torso, any device)."""

    def __init__(self, net: ActorCritic, seed: int) -> None:
        self.net = net
        self.gen = torch.Generator().manual_seed(seed)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, with_value: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """``(action, log_prob, value, policy_params)`` for a batch of observations (value None if not asked)."""
        params, value = self.net(torch.from_numpy(obs))
        action = self.net.dist.sample(params, self.gen)
        logp = self.net.dist.log_prob(params, action)
        return action.numpy(), logp.numpy(), value.numpy(), params.numpy()

    @torch.inference_mode()
    def value(self, obs: np.ndarray) -> np.ndarray:
        return self.net.value(torch.from_numpy(obs)).numpy()

    def get_state(self) -> torch.Tensor:
        return self.gen.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.gen.set_state(state)


class NumpyEngine:
    """Evaluates a fused-MLP actor-critic with numpy on views of its parameters.

    The views share memory with the module's tensors, so parameters loaded into the
    module (``load_state_dict`` copies in place) are seen without any refresh.
    """

    def __init__(self, net: ActorCritic, seed: int) -> None:
        assert NumpyEngine.supports(net)
        self.net = net
        self.discrete = net.dist.__name__ == "Categorical"
        torso: ParallelMLP = net.torso  # type: ignore[assignment]
        act = numpy_activation(torso.act)
        # One MLP per slice: per-slice 2-D matmuls go to BLAS, numpy's broadcast 3-D matmul does not.
        self.torsos = [NumpyMLP(stacked_layers(torso.weights, torso.biases, k), act, activate_last=True,
                                source=list(torso.weights)) for k in (0, 1)]
        head = net.pi.logits if self.discrete else net.pi.mean
        self.pi_head = NumpyMLP(linear_layers([head]), None)  # type: ignore[list-item]
        self.log_std = None if self.discrete else cast(GaussianHead, net.pi).log_std.detach().numpy()
        self.v_head = NumpyMLP(linear_layers([net.v.v]), None)
        self.norm = NumpyObsNorm(net.obs_norm)
        self.rng = np.random.default_rng(seed)
        self._rows = np.zeros(0, np.int64)

    @staticmethod
    def supports(net: ActorCritic) -> bool:
        """True for a fused MLP actor-critic with tanh/relu activations on CPU."""
        return (isinstance(net, ActorCritic) and getattr(net, "fused", False) and isinstance(net.torso, ParallelMLP)
                and numpy_activation(net.torso.act) is not None and net.obs_ndim == 1 and on_cpu_float32(net))

    def _torso(self, obs: np.ndarray, slices: tuple[int, ...] = (0, 1)) -> list[np.ndarray | None]:
        x = self.norm(obs)
        out: list[np.ndarray | None] = [None, None]
        for k in slices:
            out[k] = self.torsos[k](x)
        return out  # [policy features, value features]

    def act(self, obs: np.ndarray, with_value: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        if len(self._rows) != len(obs):
            self._rows = np.arange(len(obs))
        h = self._torso(obs, (0, 1) if with_value else (0,))
        pi, v = h
        assert pi is not None
        out = self.pi_head(pi)
        value = self.v_head(v)[:, 0] if v is not None else None
        if self.discrete:
            # Gumbel-max sampling; log-softmax through one logaddexp reduction.
            action = np.argmax(out + self.rng.gumbel(size=out.shape), axis=-1)
            rows = self._rows if len(self._rows) == len(out) else np.arange(len(out))
            logp = out[rows, action] - np.logaddexp.reduce(out, axis=-1)
            return action, logp.astype(np.float32), value, out
        assert self.log_std is not None  # a Gaussian head's (continuous actions)
        log_std = np.clip(self.log_std, LOG_STD_MIN, LOG_STD_MAX)
        noise = self.rng.standard_normal(out.shape, dtype=np.float32)
        action = out + np.exp(log_std) * noise
        logp = (-0.5 * noise**2 - log_std - _HALF_LOG_2PI).sum(-1)
        params = np.concatenate([out, np.broadcast_to(log_std, out.shape)], -1)
        return action.astype(np.float32), logp.astype(np.float32), value, params

    def value(self, obs: np.ndarray) -> np.ndarray:
        v = self._torso(obs, (1,))[1]
        assert v is not None
        return self.v_head(v)[:, 0]

    def get_state(self) -> dict:
        return dict(self.rng.bit_generator.state)

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def make_engine(net: ActorCritic, num_envs: int, seed: int, prefer: str = "auto") -> TorchEngine | NumpyEngine:
    """Numpy for small batches of eligible networks (``prefer='auto'``), torch otherwise."""
    if prefer == "numpy" or (prefer == "auto" and num_envs <= NUMPY_MAX_BATCH and NumpyEngine.supports(net)):
        return NumpyEngine(net, seed)
    return TorchEngine(net, seed)
