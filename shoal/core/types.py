"""Batch types passed between env loop, actors, adders, tables and learners.

Everything is batched over the vector env's copies: a leading axis ``B`` for a
single step, time-major ``[T, B, ...]`` for sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class EnvSpec:
    """What an algorithm needs to know about an environment to build its networks."""

    env_id: str
    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    discrete: bool
    num_actions: int  # number of discrete actions, or the action dimension if continuous
    action_low: np.ndarray | None = None  # continuous bounds, shape [act_dim]
    action_high: np.ndarray | None = None
    num_obs_states: int | None = None  # set when observations are Discrete(n) (tabular)

    @property
    def act_dim(self) -> int:
        return 1 if self.discrete else self.num_actions


@dataclass
class StepResult:
    """One vector-env step, as the actor and adders see it.

    ``next_obs`` is the observation to act on next (already the reset observation
    for copies whose episode ended); ``final_obs`` is the last observation of an
    episode that ended at this step (valid where ``terminated | truncated``).
    """

    next_obs: np.ndarray
    reward: np.ndarray  # [B] float
    terminated: np.ndarray  # [B] bool
    truncated: np.ndarray  # [B] bool
    final_obs: np.ndarray  # [B, *obs_shape]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated


@dataclass
class Rollout:
    """A time-major on-policy batch ``[T, B, ...]`` plus what is needed to bootstrap.

    Fields are numpy arrays while in transit (Ray moves numpy arrays between processes
    through shared memory, zero-copy, where tensors would be pickled) and become tensors
    at the learner (:meth:`tensors`). ``final_values[t, b]`` is ``V(final_obs)`` where
    copy ``b`` was truncated at ``t`` (0 elsewhere); ``bootstrap_value`` is ``V`` of the
    observation after the last step. ``extras`` holds algorithm-specific per-step arrays
    (e.g. the policy's parameters for an exact KL).

    An actor may leave the three value fields as None and send instead the observations
    they need (``last_obs`` and the truncated steps' ``final_obs`` rows at ``final_t``,
    ``final_b``): the learner then computes every value in one batched pass with
    :meth:`fill_values`, identical to the actor's in a synchronous topology and cheaper.
    """

    obs: Any
    actions: Any
    log_probs: Any
    values: Any
    rewards: Any
    terminated: Any
    truncated: Any
    final_values: Any
    bootstrap_value: Any
    extras: dict[str, Any] = field(default_factory=dict)
    policy_version: int = 0
    last_obs: Any = None
    final_obs: Any = None
    final_t: Any = None
    final_b: Any = None

    _SEQ = ("obs", "actions", "log_probs", "values", "rewards", "terminated", "truncated", "final_values")

    @property
    def num_steps(self) -> int:
        return int(np.prod(self.rewards.shape))

    def tensor(self, name: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """Field (or extra) ``name`` as a tensor on ``device``."""
        from shoal.core.device import to_device

        value = self.extras[name] if name in self.extras else getattr(self, name)
        if isinstance(value, np.ndarray):
            # Arrays from Ray's shared memory are read-only: copy them once here.
            value = torch.from_numpy(value if value.flags.writeable else value.copy())
        return to_device(value, torch.device(device))

    @torch.no_grad()
    def fill_values(self, value_fn: Any, device: torch.device | str = "cpu") -> "Rollout":
        """Compute missing ``values``, ``final_values`` and ``bootstrap_value`` with ``value_fn``."""
        if self.values is not None:
            return self
        obs = self.tensor("obs", device)
        T, B = obs.shape[:2]
        self.values = value_fn(obs.reshape(T * B, *obs.shape[2:])).reshape(T, B)
        self.bootstrap_value = value_fn(self.tensor("last_obs", device))
        self.final_values = torch.zeros(T, B, device=device)
        if self.final_t is not None and len(self.final_t):
            t, b = torch.as_tensor(self.final_t), torch.as_tensor(self.final_b)
            self.final_values[t, b] = value_fn(self.tensor("final_obs", device))
        return self

    @staticmethod
    def concat(rollouts: list["Rollout"]) -> "Rollout":
        """Join rollouts from several actors along the batch axis."""
        if len(rollouts) == 1:
            return rollouts[0]
        cat = (lambda xs, axis: np.concatenate(xs, axis)) if isinstance(rollouts[0].rewards, np.ndarray) \
            else (lambda xs, axis: torch.cat(xs, axis))
        get = lambda name, axis: None if getattr(rollouts[0], name) is None else cat([getattr(r, name) for r in rollouts], axis)  # noqa: E731
        seq = {n: get(n, 1) for n in Rollout._SEQ}
        extras = {k: cat([r.extras[k] for r in rollouts], 1) for k in rollouts[0].extras}
        out = Rollout(**seq, bootstrap_value=get("bootstrap_value", 0), extras=extras,
                      policy_version=min(r.policy_version for r in rollouts), last_obs=get("last_obs", 0))
        if rollouts[0].final_t is not None:
            offsets = np.cumsum([0] + [r.rewards.shape[1] for r in rollouts[:-1]])
            out.final_t = np.concatenate([r.final_t for r in rollouts])
            out.final_b = np.concatenate([r.final_b + off for r, off in zip(rollouts, offsets)])
            out.final_obs = np.concatenate([r.final_obs for r in rollouts])
        return out

    def to_item(self) -> dict[str, np.ndarray]:
        """This rollout (sent with ``values_in_learner``) as one fixed-shape item for a table.

        Item arrays have a leading axis of 1. A copy is truncated at most once in an unroll
        shorter than the env's time limit, so the truncated steps' final observations fit one
        row per copy: ``final_obs_row [B, *obs]`` and ``final_step [B]`` (-1 where none), which
        keeps every item of a run the same shape without storing ``T`` observations twice.
        """
        if self.values is not None or self.last_obs is None:
            raise ValueError("to_item needs a rollout whose values the learner computes (values_in_learner)")
        T, B = self.rewards.shape[:2]
        if len(self.final_b) != len(np.unique(self.final_b)):
            from shoal.errors import ConfigError

            raise ConfigError(f"an env copy was truncated twice within one {T}-step unroll; make rollout_length "
                              "shorter than the env's time limit")
        rows = np.zeros((B, *self.obs.shape[2:]), self.obs.dtype)
        step = np.full(B, -1, np.int64)
        rows[self.final_b] = self.final_obs
        step[self.final_b] = self.final_t
        fields = {n: getattr(self, n) for n in ("obs", "actions", "log_probs", "rewards", "terminated", "truncated")}
        fields.update({f"extra.{k}": v for k, v in self.extras.items()})
        fields.update(last_obs=self.last_obs, final_obs_row=rows, final_step=step,
                      policy_version=np.asarray(self.policy_version, np.int64))
        return {k: np.asarray(v)[None] for k, v in fields.items()}

    @staticmethod
    def from_items(items: dict[str, np.ndarray]) -> list["Rollout"]:
        """The rollouts of a batch of items made by :meth:`to_item` (leading axis = item)."""
        out = []
        for i in range(len(items["rewards"])):
            b = np.flatnonzero(items["final_step"][i] >= 0)
            out.append(Rollout(items["obs"][i], items["actions"][i], items["log_probs"][i], None, items["rewards"][i],
                               items["terminated"][i], items["truncated"][i], None, None,
                               {k[6:]: v[i] for k, v in items.items() if k.startswith("extra.")},
                               policy_version=int(items["policy_version"][i]), last_obs=items["last_obs"][i],
                               final_obs=items["final_obs_row"][i][b], final_t=items["final_step"][i][b].astype(np.int64),
                               final_b=b.astype(np.int64)))
        return out


@dataclass
class ActorReport:
    """What an actor node returns after running some env steps."""

    env_steps: int
    episode_returns: list[float]
    episode_lengths: list[int]
    data: Any = None  # whatever the adder drained: a Rollout, a dict of arrays, a list of items
    actor_id: int = 0
