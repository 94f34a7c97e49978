"""Actor nodes that come back after their process died: spawned restartable, deaths counted, a limit.

Every topology spawns its actor-like nodes (actors, env workers, agents, DPPO workers,
self-play actors) through :meth:`ActorRestarts.spawn`, so on a backend whose nodes live in
processes of their own (Ray) each is started anew after its process died (killed, out of
memory, its machine lost) with its constructor's arguments, then its ``on_restart()``. The
driver counts each death with :meth:`ActorRestarts.died` (``actor_restarts`` in the metrics)
and calls the node again; past ``max_restarts`` deaths of one node the run stops with an
error naming it. Other nodes (learners, replay, queues, parameter and variable servers)
are not restarted: their death stops the run with :func:`not_restarted`'s error.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from shoal.backends.base import Backend, NodeDied, NodeHandle
from shoal.errors import ShoalError

_log = logging.getLogger("shoal")


def not_restarted(error: NodeDied) -> ShoalError:
    """The error for the death of a node that is not an actor (a learner, queue, replay or server)."""
    return ShoalError(f"node {error.node or '(unknown)'} died ({error.reason}); only actor nodes are restarted, so the "
                      "run stops here: resume it from its last checkpoint with shoal train --resume")


class ActorRestarts:
    """The restart budget and the deaths so far of a program's ``num_actors`` actor nodes."""

    def __init__(self, num_actors: int, max_restarts: int, timeout_s: float = 120.0) -> None:
        self.max_restarts = max_restarts  # deaths each actor node survives (on a backend that restarts them: Ray)
        self.timeout_s = timeout_s  # longest an actor node may take to come back after it died
        self.counts = [0] * num_actors
        self.recovering: dict[int, float] = {}  # actor id -> when it died; until a call of it succeeds
        self.not_before: dict[int, float] = {}  # actor id -> earliest time of its next call (while it restarts)
        self.last_states: dict[int, Any] = {}  # actor id -> its node state in the newest checkpoint (see remember)

    def spawn(self, backend: Backend, cls: type, *args: Any, name: str, **options: Any) -> NodeHandle:
        """Spawn an actor node that the backend restarts up to ``max_restarts`` times (placed as an actor, with
        the cluster's other actors, even with ``max_restarts=0``)."""
        return backend.spawn(cls, *args, name=name, max_restarts=self.max_restarts, actor=True, **options)

    @property
    def total(self) -> int:
        """Deaths of all actor nodes so far (the ``actor_restarts`` metric)."""
        return sum(self.counts)

    def remember(self, states: list[Any]) -> None:
        """The actor nodes' states just checkpointed (or loaded): what a restarted node takes on (counters and
        statistics, not generators) so that its schedules go on from there rather than from zero."""
        self.last_states = dict(enumerate(states))

    def may_call(self, i: int, now: float) -> bool:
        """Whether actor ``i`` may be called now (not within the pause after a death)."""
        return self.not_before.get(i, 0.0) <= now

    def recovered(self, i: int) -> None:
        """A call of actor ``i`` succeeded."""
        self.recovering.pop(i, None)

    def check_overdue(self, now: float) -> None:
        """Fail if a dead actor node has not come back in time (Ray cannot place it: it never answers nor fails)."""
        for i, since in self.recovering.items():
            if now - since > self.timeout_s:
                raise ShoalError(f"actor node {i} died and did not come back within {self.timeout_s:.0f} s; "
                                 "check the cluster's free resources and the node's log")

    def died(self, i: int, error: NodeDied, actor: NodeHandle) -> None:
        """Count the death of actor ``i`` (handle ``actor``); past ``max_restarts`` the run stops with an error naming it.

        A call of the actor fails the same way when a node it called died (a learner, a server): that
        stops the run with :func:`not_restarted`'s error. Calls made while the backend restarts the
        node fail too (transiently): those are the same death, and the node is called again after a
        pause until a call succeeds.
        """
        if error.node != getattr(actor, "name", None):
            raise not_restarted(error) from None  # a node it called died, not the actor itself
        now = time.monotonic()
        self.not_before[i] = now + 0.5
        if i in self.recovering and error.transient:
            if now - self.recovering[i] > self.timeout_s:
                raise ShoalError(f"actor node {i} died and did not come back within {self.timeout_s:.0f} s "
                                 f"(last: {error.reason}); check the cluster's resources and the node's log") from None
            return
        self.recovering[i] = now
        self.counts[i] += 1
        if self.counts[i] > self.max_restarts:
            raise ShoalError(f"actor node {i} died {self.counts[i]} times, more than max_restarts="
                             f"{self.max_restarts} (last: {error.reason}); find the cause in its log, or allow more "
                             "restarts with max_restarts") from None
        _log.warning("actor node %d died (%s); it restarts and pulls the newest parameters (%d of %d)", i, error.reason,
                     self.counts[i], self.max_restarts)
