"""IMPALA's learner as a group of ranks: each takes its own B/L unrolls from the queue per update.

Every rank asks the queue node for ``batch_unrolls / L`` unrolls of its own, drops those that
lag more than ``max_policy_lag`` versions (every rank holds the same version) and tops up from
the queue until it holds its full share, so each update is exactly ``B/L`` unrolls on every
rank (asserted). Ranks agree before each update: when one has no share in time (or its call
is out of time), none updates and what the others took waits, unlost, for their next call.
Rank 0 alone publishes versions to the variable server. The queue and variable-server handles
travel to the ranks, so this runs where handles cross processes (Ray).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from shoal.errors import ConfigError
from shoal.topologies.impala import ImpalaLearnerNode, ImpalaSettings
from shoal.topologies.learners import Rank, rank_context
from shoal.topologies.nodes import NodeContext


class ImpalaRankNode(Rank, ImpalaLearnerNode):
    """One rank of IMPALA's learner group (see the module docstring)."""

    def __init__(self, ctx: NodeContext, rank: int, world_size: int, queue: Any, variables: Any,
                 settings: ImpalaSettings, batch_unrolls: int) -> None:
        if batch_unrolls % world_size:
            raise ConfigError(f"batch_unrolls={batch_unrolls} does not split into {world_size} equal learner shards; "
                              f"set topology.batch_unrolls to a multiple of num_learners={world_size}")
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


def spawn_impala_learners(backend: Any, ctx: NodeContext, num_learners: int, queue: Any, variables: Any,
                          settings: ImpalaSettings, batch_unrolls: int) -> Any:
    """IMPALA's learner group on ``backend`` (Ray: its ranks reach the queue and variable-server nodes)."""
    from shoal.topologies.learners import LearnerGroup

    if not callable(getattr(backend, "spawn_group", None)):
        raise ConfigError(f"impala with num_learners={num_learners} needs --backend ray (its learner ranks call the queue "
                          "and variable-server nodes from processes of their own); use --backend ray or num_learners=1")
    return LearnerGroup(backend, ImpalaRankNode, ctx, num_learners, queue, variables, settings, batch_unrolls)
