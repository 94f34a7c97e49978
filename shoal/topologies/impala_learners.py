"""IMPALA's learner as a group of ranks: each takes its own B/L unrolls from the queue per update.

Every rank asks the queue node for ``batch_unrolls / L`` unrolls of its own, drops those that
lag more than ``max_policy_lag`` versions (every rank holds the same version) and tops up from
the queue until it holds its full share, so each update is exactly ``B/L`` unrolls on every
rank (asserted). Ranks agree before each update: when one has no share in time (or its call
is out of time), none updates and what the others took waits, unlost, for their next call.
Rank 0 alone publishes versions to the variable server. The queue and variable-server handles
travel to the ranks, so this runs where handles cross processes (Ray).

On backends that keep nodes in the driver's process (``inprocess``, ``threaded``) the queue and the
variable server are objects of that process, which rank processes cannot call. There the learner
node is :class:`ImpalaGroupLearnerNode`, placed like any learner node: it takes ``B`` fresh unrolls
from the queue (dropping those that lag more than ``max_policy_lag`` versions and topping up), hands
unrolls ``[r B/L, (r+1) B/L)`` to rank ``r`` (a process of its own, :mod:`shoal.backends.process`),
and publishes the version rank 0 returns. Each rank asserts it got ``B/L`` unrolls and averages its
gradients with the others', so the ranks stay identical; rank 0's state is what checkpoints hold.
The split is fixed by rank, so the cooperative in-process backend stays deterministic.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import torch

from shoal.core.distributed import shard_bounds
from shoal.core.types import Rollout
from shoal.errors import ConfigError, ShoalError
from shoal.services.variables import Publisher
from shoal.topologies.impala import ImpalaLearnerNode, ImpalaSettings
from shoal.topologies.learners import LearnerGroup, Rank, rank_context
from shoal.topologies.nodes import LearnerNode, NodeContext


class ImpalaRankNode(Rank, ImpalaLearnerNode):
    """One rank of IMPALA's learner group (see the module docstring)."""

    def __init__(self, ctx: NodeContext, rank: int, world_size: int, queue: Any, variables: Any,
                 settings: ImpalaSettings, batch_unrolls: int) -> None:
        _check_split(batch_unrolls, world_size)
        self.rank, self.world_size = rank, world_size  # before the base class publishes the first version
        self._pending: dict[str, np.ndarray] | None = None
        self._deadline: float | None = None
        ImpalaLearnerNode.__init__(self, rank_context(ctx, world_size), queue, variables, settings,
                                   batch_unrolls // world_size)
        self._set_rank(ctx.algo, rank, world_size)

    def _after_update(self, restored: bool = False) -> None:
        if self.rank == 0:
            super()._after_update(restored)

    def train(self, num_batches: int, timeout: float, seconds: float | None = None) -> dict[str, float]:
        """As a single learner's ``train``, in lockstep with the other ranks; counts are the group's."""
        assert self.collective is not None, "join the learner group before training"
        # The time limit is checked where the ranks agree (``_next_batch``), never by one rank alone.
        self._deadline = None if seconds is None else time.monotonic() + seconds
        out = super().train(num_batches, timeout, None)
        out["learner_env_steps"] = float(self.learner_env_steps * self.world_size)
        dropped = torch.tensor(float(self.dropped), dtype=torch.float64, device=self.collective.device)
        out["dropped_unrolls"] = float(self.collective.sum(dropped))
        return out

    def _next_batch(self, timeout: float) -> dict[str, np.ndarray] | None:
        """This rank's ``B/L`` fresh unrolls once every rank has its share in time, else None on every rank."""
        assert self.collective is not None
        in_time = self._deadline is None or time.monotonic() < self._deadline
        while in_time and (self._pending is None or len(self._pending["rewards"]) < self.batch_unrolls):
            have = 0 if self._pending is None else len(self._pending["rewards"])
            got = self.queue.call("get", self.batch_unrolls - have, timeout).result()
            if got is None:
                break
            fresh = self.learner.version - got["policy_version"] <= self.max_policy_lag
            self.dropped += int((~fresh).sum())
            got = {k: v[fresh] for k, v in got.items()}
            self._pending = got if self._pending is None else {k: np.concatenate([self._pending[k], got[k]])
                                                               for k in got}
        full = self._pending is not None and len(self._pending["rewards"]) == self.batch_unrolls
        if not self.collective.all_true(in_time and full):
            return None
        items, self._pending = self._pending, None
        assert items is not None and len(items["rewards"]) == self.batch_unrolls  # each rank on B/L unrolls
        return items

    def shard_state(self) -> dict[str, Any]:
        """Nothing but the shared learner state: IMPALA's ranks hold no replay."""
        return {}


class ImpalaShareRankNode(Rank, LearnerNode):
    """One rank of IMPALA's learner group in a process of its own, handed its ``B/L`` unrolls per update."""

    def __init__(self, ctx: NodeContext, rank: int, world_size: int, batch_unrolls: int) -> None:
        _check_split(batch_unrolls, world_size)
        LearnerNode.__init__(self, rank_context(ctx, world_size))
        self._set_rank(ctx.algo, rank, world_size)
        self.batch_unrolls = batch_unrolls // world_size
        """This rank's share of each update's unrolls (``B/L``)."""
        self.learned = {"unrolls": 0, "env_steps": 0}
        """Unrolls and env steps this rank computed gradients on so far."""

    def step_share(self, rollouts: list[Rollout]) -> tuple[dict[str, float], tuple[int, dict[str, torch.Tensor]] | None]:
        """One update on this rank's ``B/L`` unrolls (gradients averaged over the ranks); its metrics, and on rank 0
        the new version and parameters (what the group publishes)."""
        assert self.collective is not None, "join the learner group before learning"
        if len(rollouts) != self.batch_unrolls:  # each rank on B/L unrolls, never more or fewer
            raise ShoalError(f"learner rank {self.rank} was handed {len(rollouts)} unrolls for one update, "
                             f"not its share of {self.batch_unrolls}; the group's split is broken")
        metrics = {k: float(v) for k, v in self.learner.step(rollouts).items()}
        self.learner_steps += 1
        self.learned["unrolls"] += len(rollouts)
        self.learned["env_steps"] += sum(r.num_steps for r in rollouts)
        return metrics, (self.learner.get_variables() if self.rank == 0 else None)

    def learned_share(self) -> dict[str, int]:
        """What this rank computed on so far (:attr:`learned`)."""
        return dict(self.learned)

    def shard_state(self) -> dict[str, Any]:
        """Nothing but the shared learner state: IMPALA's ranks hold no replay."""
        return {}


class _GroupLearner:
    """What :class:`ImpalaGroupLearnerNode` calls its learner: the ranks, rank 0's version and parameters."""

    def __init__(self, group: LearnerGroup) -> None:
        self.group = group
        self.version, self._variables = group.call("get_variables").result()

    def step(self, rollouts: list[Rollout]) -> dict[str, float]:
        """One group update on ``rollouts`` (the whole batch): unrolls ``[r B/L, (r+1) B/L)`` go to rank ``r``."""
        L = self.group.num_learners
        shares = [rollouts[slice(*shard_bounds(len(rollouts), r, L, what="batch of unrolls"))] for r in range(L)]
        metrics, (self.version, self._variables) = self.group.scatter("step_share", shares, what="an update").result()
        return metrics

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        return self.version, self._variables

    def state(self) -> dict[str, Any]:
        return self.group.call("state").result()["learner"]

    def load_state(self, state: dict[str, Any]) -> None:
        # The ranks' own step counters are not read anywhere: the group node keeps the count.
        self.group.call("load_state", {"learner": state, "learner_steps": 0}).result()
        self.version, self._variables = self.group.call("get_variables").result()


class ImpalaGroupLearnerNode(ImpalaLearnerNode):
    """IMPALA's learner node when the ranks cannot reach the queue themselves (see the module docstring).

    It holds no learner of its own (the ranks do) and so skips the learner node's constructor; what
    the queue learner's ``train``, ``state`` and ``load_state`` use of it is set here.
    """

    COUNTERS = ImpalaLearnerNode.COUNTERS

    def __init__(self, ctx: NodeContext, num_learners: int, queue: Any, variables: Any, settings: ImpalaSettings,
                 batch_unrolls: int) -> None:
        _check_split(batch_unrolls, num_learners)
        self.tables: dict[str, Any] = {}
        self.learner_steps = 0
        self._lock = threading.RLock()
        for name in self.COUNTERS:
            setattr(self, name, 0)
        self.max_policy_lag, self.batch_unrolls = settings.max_policy_lag, batch_unrolls
        self.queue = queue
        self.publisher = Publisher(variables)
        self._pending: dict[str, np.ndarray] | None = None
        self.group = LearnerGroup(None, ImpalaShareRankNode, ctx, num_learners, batch_unrolls)
        try:
            self.learner: Any = _GroupLearner(self.group)
            self._after_update()
        except BaseException:
            self.group.close()
            raise

    def _next_batch(self, timeout: float) -> dict[str, np.ndarray] | None:
        """``B`` fresh unrolls: those lagging more than ``max_policy_lag`` versions are dropped and the batch topped
        up from the queue. None when the queue did not yield them in time; what was taken waits for the next call."""
        while self._pending is None or len(self._pending["rewards"]) < self.batch_unrolls:
            have = 0 if self._pending is None else len(self._pending["rewards"])
            got = self.queue.call("get", self.batch_unrolls - have, timeout).result()
            if got is None:
                return None
            fresh = self.learner.version - got["policy_version"] <= self.max_policy_lag
            self.dropped += int((~fresh).sum())
            got = {k: v[fresh] for k, v in got.items()}
            self._pending = got if self._pending is None else {k: np.concatenate([self._pending[k], got[k]]) for k in got}
        items, self._pending = self._pending, None
        return items

    def _restored(self) -> None:
        self._pending = None  # unrolls taken before a restore are judged against the restored version no more
        super()._restored()

    def each(self, method: str, *args: Any) -> list[Any]:
        """``method`` called on every rank, results in rank order (tests, diagnostics)."""
        return self.group.each(method, *args)

    def close(self) -> None:
        """Stop the rank processes."""
        self.group.close()


def _check_split(batch_unrolls: int, world_size: int) -> None:
    if batch_unrolls % world_size:
        raise ConfigError(f"batch_unrolls={batch_unrolls} does not split into {world_size} equal learner shards; "
                          f"set topology.batch_unrolls to a multiple of num_learners={world_size}")


def spawn_impala_learners(backend: Any, ctx: NodeContext, num_learners: int, queue: Any, variables: Any,
                          settings: ImpalaSettings, batch_unrolls: int) -> Any:
    """IMPALA's learner group on ``backend``: on Ray ranks that reach the queue and variable-server nodes
    themselves; elsewhere a learner node that feeds rank processes their shares (see the module docstring)."""
    if callable(getattr(backend, "spawn_group", None)):
        return LearnerGroup(backend, ImpalaRankNode, ctx, num_learners, queue, variables, settings, batch_unrolls)
    return backend.spawn(ImpalaGroupLearnerNode, ctx, num_learners, queue, variables, settings, batch_unrolls,
                         name="learner")
