"""Recurrent PPO and A2C: an LSTM actor-critic, the actor that carries its state, and its policies.

The network's state is a tuple of ``[lstm_layers, B, lstm_hidden]`` tensors: ``(h, c)`` of the
policy LSTM, then ``(h, c)`` of the critic's own LSTM when ``critic_lstm``. The state entering a
step where an episode starts is zeroed (``starts``), so a whole rollout recomputed in one pass from
its stored start state gives exactly what the actor computed step by step (tested).

Resuming from a checkpoint restarts every env copy's episode (what the actor nodes do), so the
carried LSTM state restarts at zero with it and is not part of the actor's checkpointed state.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from shoal.core.interfaces import Actor
from shoal.core.types import EnvSpec, Rollout, StepResult
from shoal.errors import ConfigError
from shoal.nets import CategoricalHead, GaussianHead, ValueHead
from shoal.nets.normalize import ObsNormalizer
from shoal.nets.recurrent import LSTMTorso
from shoal.nets.torsos import mlp_layers

#: The network's carried state: ``(h, c)`` of each LSTM, each ``[lstm_layers, B, lstm_hidden]``.
RecurrentState = tuple[torch.Tensor, ...]


class RecurrentActorCritic(nn.Module):
    """LSTM actor-critic: obs -> (normalise) -> LSTM -> MLP ``hidden`` -> policy / value heads.

    - ``initial_state(batch)``: the zero state of ``batch`` env copies.
    - ``step(obs[B, ...], state, episode_starts[B]) -> (policy_params[B, P], value[B], new_state)``:
      one env step (what actors and exported policies call).
    - ``forward(obs[T, B, ...], state, starts[T, B]) -> (policy_params[T, B, P], value[T, B], state)``:
      a whole sequence, from the state before its first step.

    ``dist`` interprets ``policy_params`` as the feed-forward :class:`ActorCritic`'s does.
    """

    def __init__(self, spec: EnvSpec, lstm_hidden: int, lstm_layers: int, hidden: tuple[int, ...], activation: str,
                 critic_lstm: bool, log_std_init: float, normalize_obs: bool) -> None:
        super().__init__()
        if len(spec.obs_shape) == 3 or spec.obs_dtype == np.uint8:
            raise ConfigError(f"recurrent=true takes vector observations, got shape {spec.obs_shape} "
                              f"({spec.obs_dtype}) from {spec.env_id}; use the feed-forward network for images")
        in_dim = int(math.prod(spec.obs_shape)) if spec.obs_shape else 1
        self.obs_norm = ObsNormalizer(spec.obs_shape, normalize_obs)
        self.obs_ndim = len(spec.obs_shape)
        self.pi_lstm = LSTMTorso(in_dim, lstm_hidden, num_layers=lstm_layers)
        self.v_lstm = LSTMTorso(in_dim, lstm_hidden, num_layers=lstm_layers) if critic_lstm else None
        self.pi_mlp = mlp_layers(lstm_hidden, hidden, activation) if hidden else nn.Identity()
        self.v_mlp = mlp_layers(lstm_hidden, hidden, activation) if hidden else nn.Identity()
        d = hidden[-1] if hidden else lstm_hidden
        self.pi = CategoricalHead(d, spec.num_actions) if spec.discrete else GaussianHead(d, spec.num_actions, log_std_init)
        self.v = ValueHead(d)
        self.dist = self.pi.dist
        self.lstm_hidden, self.lstm_layers = lstm_hidden, lstm_layers
        self.num_lstms = 2 if critic_lstm else 1

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> RecurrentState:
        """The zero state of ``batch`` env copies."""
        return tuple(torch.zeros(self.lstm_layers, batch, self.lstm_hidden, device=device)
                     for _ in range(2 * self.num_lstms))

    def forward(self, obs: torch.Tensor, state: RecurrentState, starts: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, RecurrentState]:
        T, B = obs.shape[:2]
        x = self.obs_norm(obs.float()).reshape(T, B, -1)
        h_pi, pi_state = self.pi_lstm(x, (state[0], state[1]), starts)
        if self.v_lstm is not None:
            h_v, v_state = self.v_lstm(x, (state[2], state[3]), starts)
            new_state: RecurrentState = (*pi_state, *v_state)
        else:
            h_v, new_state = h_pi, pi_state
        return self.pi(self.pi_mlp(h_pi)), self.v(self.v_mlp(h_v)), new_state

    def step(self, obs: torch.Tensor, state: RecurrentState, episode_starts: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, RecurrentState]:
        """One step of ``B`` copies: ``(policy_params[B, P], value[B], new_state)``."""
        params, value, new_state = self.forward(obs.unsqueeze(0), state, episode_starts.reshape(1, -1))
        return params[0], value[0], new_state

    def pack_state(self, state: RecurrentState) -> torch.Tensor:
        """``state`` as one ``[B, S]`` tensor (a row per env copy), for storing in a rollout."""
        return torch.cat([s.permute(1, 0, 2).reshape(s.shape[1], -1) for s in state], -1)

    def unpack_state(self, flat: torch.Tensor) -> RecurrentState:
        """The state of :meth:`pack_state`'s ``[B, S]`` rows."""
        B = flat.shape[0]
        parts = flat.reshape(B, 2 * self.num_lstms, self.lstm_layers, self.lstm_hidden)
        return tuple(parts[:, i].permute(1, 0, 2).contiguous() for i in range(2 * self.num_lstms))

    @property
    def state_size(self) -> int:
        """Width ``S`` of one packed state row."""
        return 2 * self.num_lstms * self.lstm_layers * self.lstm_hidden


def select_columns(state: RecurrentState, idx: torch.Tensor | np.ndarray) -> RecurrentState:
    """The state of env copies ``idx`` only."""
    i = torch.as_tensor(idx, dtype=torch.long)
    return tuple(s[:, i] for s in state)


class RecurrentRolloutActor(Actor):
    """Records ``[T, B]`` rollouts with an LSTM policy whose state it carries across steps and rollouts.

    With each rollout go the per-step ``starts`` flags (True where a step is an episode's first)
    and, in ``extras["lstm_state"] [T / sequence_length, B, S]``, the carried state entering every
    ``sequence_length``-th step (before the zeroing of a start), from which the learner recomputes
    each sequence exactly as it was acted. The actor computes the values too (it runs the critic to
    carry the critic LSTM's state anyway): per step, at truncations (from the state the truncated
    episode had reached) and the bootstrap value after the last step (from the carried state).
    """

    def __init__(self, net: RecurrentActorCritic, spec: EnvSpec, rollout_length: int, num_envs: int, seed: int,
                 sequence_length: int = 0) -> None:
        self.net = net
        self.T, self.B = rollout_length, num_envs
        self.L = sequence_length or rollout_length
        if rollout_length % self.L:
            raise ConfigError(f"sequence_length={sequence_length} must divide rollout_length={rollout_length}")
        self.gen = torch.Generator().manual_seed(seed)
        self.version = 0
        T, B = self.T, self.B
        self.obs = np.zeros((T, B, *spec.obs_shape), np.float32)
        self.actions = np.zeros((T, B) if spec.discrete else (T, B, spec.num_actions),
                                dtype=np.int64 if spec.discrete else np.float32)
        self.log_probs = np.zeros((T, B), np.float32)
        self.values = np.zeros((T, B), np.float32)
        self.rewards = np.zeros((T, B), np.float32)
        self.terminated = np.zeros((T, B), np.float32)
        self.truncated = np.zeros((T, B), np.float32)
        self.final_values = np.zeros((T, B), np.float32)
        self.starts = np.zeros((T, B), bool)
        self.seq_state = np.zeros((T // self.L, B, net.state_size), np.float32)
        self.params: np.ndarray | None = None
        self.t = 0
        self.last_obs: np.ndarray | None = None
        self.state_now: RecurrentState = net.initial_state(B)
        self.starts_now = np.ones(B, bool)

    def load_variables(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Adopt the learner's parameters (and observation statistics)."""
        self.net.load_state_dict(state_dict)
        self.version = version

    def observe_first(self, obs: np.ndarray) -> None:
        """Every copy starts a new episode (state zeroed); a partly recorded rollout is dropped."""
        self.last_obs = obs
        self.t = 0
        self.state_now = self.net.initial_state(self.B)
        self.starts_now = np.ones(self.B, bool)

    @torch.inference_mode()
    def select_action(self, obs: np.ndarray) -> np.ndarray:
        t = self.t
        self.obs[t] = obs
        self.starts[t] = self.starts_now
        if t % self.L == 0:
            self.seq_state[t // self.L] = self.net.pack_state(self.state_now).numpy()
        params, value, self.state_now = self.net.step(torch.from_numpy(self.obs[t]), self.state_now,
                                                      torch.from_numpy(self.starts_now))
        action = self.net.dist.sample(params, self.gen)
        self.log_probs[t] = self.net.dist.log_prob(params, action).numpy()
        self.values[t] = value.numpy()
        self.actions[t] = action.numpy()
        if self.params is None:
            self.params = np.zeros((self.T, self.B, params.shape[-1]), np.float32)
        self.params[t] = params.numpy()
        return self.actions[t].copy()

    @torch.inference_mode()
    def observe(self, action: np.ndarray, step: StepResult) -> None:
        t = self.t
        self.rewards[t] = step.reward
        self.terminated[t] = step.terminated
        self.truncated[t] = step.truncated
        self.final_values[t] = 0.0
        idx = np.flatnonzero(step.truncated & ~step.terminated)
        if len(idx):  # V(final_obs) from the state the truncated episode reached, before the reset's zeroing
            _, v, _ = self.net.step(torch.as_tensor(np.ascontiguousarray(step.final_obs[idx]), dtype=torch.float32),
                                    select_columns(self.state_now, idx), torch.zeros(len(idx), dtype=torch.bool))
            self.final_values[t, idx] = v.numpy()
        self.starts_now = np.asarray(step.done, bool).copy()
        self.last_obs = step.next_obs
        self.t += 1

    @torch.inference_mode()
    def drain(self) -> Rollout:
        """The rollout recorded since the last drain (exactly ``T`` steps); the carried state goes on."""
        if self.t != self.T:
            raise RuntimeError(f"rollout has {self.t} of {self.T} steps; run the actor for rollout_length steps")
        self.t = 0
        assert self.params is not None and self.last_obs is not None
        _, bootstrap, _ = self.net.step(torch.as_tensor(np.asarray(self.last_obs, np.float32)), self.state_now,
                                        torch.from_numpy(self.starts_now))
        c = np.copy  # the buffers are reused for the next rollout
        return Rollout(c(self.obs), c(self.actions), c(self.log_probs), c(self.values), c(self.rewards),
                       c(self.terminated), c(self.truncated), c(self.final_values), bootstrap.numpy().astype(np.float32),
                       {"policy_params": c(self.params), "starts": c(self.starts), "lstm_state": c(self.seq_state)},
                       policy_version=self.version)

    def state(self) -> dict:
        """The sampling generator and version (a resume restarts episodes, and the LSTM state with them)."""
        return {"generator": self.gen.get_state(), "version": self.version}

    def load_state(self, state: dict) -> None:
        self.gen.set_state(state["generator"])
        self.version = int(state["version"])


class RecurrentPolicy:
    """Actions of an LSTM actor-critic, numpy in and out, carrying the state from call to call.

    One policy object follows one batch of episodes: it starts every copy at a zero state on
    its first call (and whenever the batch size changes) and does not see env resets, so make a
    fresh policy for each evaluation (as the runners do: evaluation counts each copy's first
    episode only).
    """

    def __init__(self, net: RecurrentActorCritic, deterministic: bool, seed: int = 0) -> None:
        self.net = net
        self.deterministic = deterministic
        self.gen = torch.Generator().manual_seed(seed)
        self.state: RecurrentState | None = None
        self.starts = torch.ones(0, dtype=torch.bool)

    @torch.inference_mode()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, np.float32))
        if self.state is None or self.state[0].shape[1] != len(x):
            self.state = self.net.initial_state(len(x))
            self.starts = torch.ones(len(x), dtype=torch.bool)
        params, _, self.state = self.net.step(x, self.state, self.starts)
        self.starts = torch.zeros(len(x), dtype=torch.bool)
        dist = self.net.dist
        return (dist.mode(params) if self.deterministic else dist.sample(params, self.gen)).numpy()
