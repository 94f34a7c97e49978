"""Learner groups: L learner ranks that average their gradients and stay identical.

``--num-learners L`` places L learner nodes (ranks) in one ``torch.distributed`` process
group (gloo on the CPU, NCCL on GPUs). Each round every rank gets the round's data, keeps its
own ``B/L`` share of it (asserted), and takes the same update as one learner on the whole
batch: its learner averages the gradient of every minibatch over the ranks (one all-reduce of
the flat gradient buffer) before clipping and stepping, and whole-batch statistics (advantage
normalisation, observation statistics, the KL of an adaptive penalty) are reduced too. All
ranks start from the run's seeded weights and apply the same averaged gradients, so their
parameters are identical after every step; rank 0 serves them (``get_variables``) and its
state is what checkpoints hold. A full-batch step is one learner's to float tolerance (tested),
and so is a minibatch step: every rank draws the same permutation of the whole batch, takes the
members of minibatch k that lie in its own share and weights its loss by its part of the
minibatch, so the averaged gradient is that of one learner's k-th minibatch.

Who samples (off-policy, DQN): every rank keeps its own shard of the replay (``buffer_size/L``
capacity); each round's items are dealt to the ranks in turn (round-robin, continuing across
rounds, so no rank starves; a round must yield at least L items). Each rank samples
``batch_size/L`` items from its shard with a generator of its own (seeded per rank, saved with
its shard) each step and writes their new priorities back into it; checkpoints hold every
rank's shard. With prioritized replay this is prioritized sampling within each shard, as sharded
replay does; importance weights are divided by the largest weight of the group's whole batch.

Placement: on Ray the ranks are Ray actors in one placement group (``PACK``: on one node when
it fits); elsewhere (``inprocess``, ``threaded``) each rank is a spawned process of its own
(:mod:`shoal.backends.process`), on CUDA with a GPU of its own (:func:`rank_devices`). The
rendezvous is the rank-0 host's address and the port of the TCP store rank 0 serves there
(bound to a port the system picks, so no other process can take it first). The group waits
for every rank to be built before they meet; the first rank error of any call to all ranks is
raised as itself, naming the rank, and stops the others.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np

from shoal.backends.base import Backend, Future, NodeHandle, Ready
from shoal.backends.process import ProcessHandle
from shoal.core.device import learner_gpus
from shoal.core.distributed import Collective, Rendezvous, group_backend, serve_store, shard_bounds
from shoal.core.seeding import derive_seed
from shoal.core.types import Rollout
from shoal.errors import ConfigError, ShoalError
from shoal.io.checkpoint import Detachable
from shoal.topologies.nodes import LearnerNode, NodeContext

#: Algorithm settings that size one learner's batch, divided among the ranks.
BATCH_KEYS = ("batch_size", "minibatch_size")
#: Algorithm settings that size a learner's replay, divided among the ranks' shards.
REPLAY_KEYS = ("buffer_size",)


def rank_context(ctx: NodeContext, world_size: int) -> NodeContext:
    """``ctx`` with one rank's share of the batch (``batch_size``, ``minibatch_size``) and of the replay.

    An error unless ``world_size`` divides each batch setting that is set (0 means "the whole batch").
    """
    cfg = dict(ctx.agent_config)
    for key in BATCH_KEYS:
        value = cfg.get(key)
        if isinstance(value, int) and value > 0:
            if value % world_size:
                raise ConfigError(f"{key}={value} does not split into {world_size} equal learner shards; "
                                  f"make it a multiple of num_learners={world_size}")
            cfg[key] = value // world_size
    for key in REPLAY_KEYS:
        value = cfg.get(key)
        if isinstance(value, int) and value > 0:
            cfg[key] = -(-value // world_size)
    return dataclasses.replace(ctx, agent_config=cfg)


def shard_rollout(rollout: Rollout, rank: int, world_size: int) -> Rollout:
    """Rank ``rank``'s share of a ``[T, B]`` rollout: env copies ``[B*rank/L, B*(rank+1)/L)`` (whole columns,
    so returns and advantages are those of the whole batch)."""
    B = rollout.rewards.shape[1]
    lo, hi = shard_bounds(B, rank, world_size, what="rollout of env copies")
    cols = lambda x: None if x is None else x[:, lo:hi]  # noqa: E731
    rows = lambda x: None if x is None else x[lo:hi]  # noqa: E731
    out = Rollout(**{n: cols(getattr(rollout, n)) for n in Rollout._SEQ}, bootstrap_value=rows(rollout.bootstrap_value),
                  extras={k: v[:, lo:hi] for k, v in rollout.extras.items()}, policy_version=rollout.policy_version,
                  last_obs=rows(rollout.last_obs))
    if rollout.final_t is not None:
        keep = (rollout.final_b >= lo) & (rollout.final_b < hi)
        out.final_t, out.final_b = rollout.final_t[keep], rollout.final_b[keep] - lo
        out.final_obs = rollout.final_obs[keep]
    return out


def shard_items(items: dict[str, Any], rank: int, world_size: int, offset: int = 0) -> dict[str, Any]:
    """Rank ``rank``'s round-robin share of a batch of replay items: item ``i`` goes to rank ``(offset + i) % L``.

    Counts differ by at most one. A caller that advances ``offset`` by each batch's size (the same on every
    rank) deals items to the ranks in turn across batches, so no rank starves when a batch is smaller than L.
    """
    n = len(next(iter(items.values())))
    start = (rank - offset) % world_size
    return {k: v[start:n:world_size] for k, v in items.items()}


class Rank:
    """What makes a learner node one rank of a group: its rank, the rendezvous, its collective.

    Mixed into learner node classes that hold ``self.learner``; :class:`LearnerGroup` calls
    ``rendezvous_address`` on rank 0, then ``join`` on every rank.
    """

    learner: Any
    rank: int = 0
    world_size: int = 1
    collective: Collective | None = None

    def _set_rank(self, algo: str, rank: int, world_size: int) -> None:
        if not hasattr(self.learner, "collective"):
            raise ConfigError(f"{algo}'s learner cannot average gradients with other learners; use num_learners=1")
        self.rank, self.world_size = rank, world_size

    def started(self) -> bool:
        """True once this rank is built (the group waits for every rank before they meet)."""
        return True

    def rendezvous_address(self, timeout_s: float = 300.0) -> tuple[str, int]:
        """Serve the group's TCP store here (rank 0) on a port the system picks; its host address and port."""
        self._store, host, port = serve_store(self.world_size, timeout_s)
        return host, port

    def join(self, rendezvous: Rendezvous) -> None:
        """Join the group (blocks until every rank has joined) and hand the learner its collective."""
        store = getattr(self, "_store", None) if self.rank == 0 else None
        self.collective = Collective(self.rank, rendezvous, getattr(self.learner, "device", "cpu"), store=store)
        self.learner.collective = self.collective

    def close(self) -> None:
        if self.collective is not None:
            self.collective.close()
            self.collective = None


class LearnerRankNode(Rank, LearnerNode):
    """One rank of a learner group: a learner node that learns on its share and averages gradients."""

    def __init__(self, ctx: NodeContext, rank: int, world_size: int) -> None:
        LearnerNode.__init__(self, rank_context(ctx, world_size))
        self._set_rank(ctx.algo, rank, world_size)
        self._offset = 0  # items dealt so far (mod L): where the next batch's round-robin starts, the same on every rank
        self._round_checked = False
        for name, table in self.tables.items():  # each rank samples its own shard with a generator of its own
            selector = getattr(table, "selector", None)
            if selector is None or not hasattr(selector, "rng"):
                raise ConfigError(f"{ctx.algo}'s replay table {name!r} has no seeded selector to shard; "
                                  "use num_learners=1")
            selector.rng = np.random.default_rng(derive_seed(ctx.seed, "replay", name, "rank", rank))

    def learn(self, env_steps: int, *data: Any) -> dict[str, float]:
        """Keep this rank's share of the round's data, then take the updates due (every rank takes the same)."""
        assert self.collective is not None, "join the learner group before learning"
        if self.tables:
            table = next(iter(self.tables.values()))
            batches = [items for items in data if items is not None and len(next(iter(items.values())))]
            total = sum(len(next(iter(items.values()))) for items in batches)
            if batches and not self._round_checked:
                self._round_checked = True
                if total < self.world_size:
                    raise ConfigError(f"a round yields {total} replay items, fewer than num_learners={self.world_size}, "
                                      "so some learner ranks get none; raise train_freq or num_envs, or lower num_learners")
            for items in batches:
                n = len(next(iter(items.values())))
                share = shard_items(items, self.rank, self.world_size, self._offset)
                self._offset = (self._offset + n) % self.world_size
                priorities = share.pop("priority", None)
                if len(next(iter(share.values()))):
                    table.insert(share, priorities)
            # Ranks agree before any of them samples: one rank alone in a step would wait forever.
            if not self.collective.all_true(table.can_sample(max(1, self.builder.replay_batch_size))):
                return {}
            return super().learn(env_steps)
        rollouts = [d for d in data if d is not None]
        if not rollouts:
            return super().learn(env_steps)
        return super().learn(env_steps, shard_rollout(Rollout.concat(rollouts), self.rank, self.world_size))

    def update(self, batch: Any, repeats: int = 1) -> dict[str, float]:
        """``repeats`` updates on this rank's share of a fixed whole ``batch`` (a rollout, or a dict of replay items).

        For equivalence checks and benchmarks: returns the last update's metrics plus ``shard_samples`` (what
        this rank computed on), ``update_s`` (seconds per update), ``cpu_s`` (this process's CPU seconds per
        update) and ``allreduce_s`` (seconds per update in the gradient all-reduce). Without a group
        (``world_size`` 1) the learner learns alone.
        """
        assert self.collective is not None or self.world_size == 1, "join the learner group before updating"
        if isinstance(batch, Rollout):
            share: Any = shard_rollout(batch, self.rank, self.world_size)  # equal shares of env copies, or an error
            samples = share.num_steps
            step = lambda: self.learner.step(share)  # noqa: E731
        else:
            shard_bounds(len(next(iter(batch.values()))), self.rank, self.world_size)  # equal shares, or an error
            share = shard_items(batch, self.rank, self.world_size)
            samples = len(next(iter(share.values())))
            step = lambda: self.learner.update(share)[0]  # noqa: E731
        reduced0 = self.collective.reduce_seconds if self.collective else 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        metrics: dict[str, float] = {}
        for _ in range(repeats):
            metrics = {k: float(v) for k, v in step().items()}
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        reduced = (self.collective.reduce_seconds if self.collective else 0.0) - reduced0
        return {**metrics, "shard_samples": float(samples), "update_s": elapsed / repeats, "cpu_s": cpu / repeats,
                "allreduce_s": reduced / repeats}

    def state(self) -> dict[str, Any]:
        """The learner node's state plus where the round-robin deal of replay items stands (the same on every rank)."""
        s = super().state()
        if self.tables:
            s["shard_offset"] = self._offset
        return s

    def shard_state(self) -> dict[str, Any]:
        """What only this rank holds: its replay shard, sampling generator included (empty without tables or
        without ``checkpoint_replay``)."""
        return {"tables": super().state().get("tables", {})} if self.tables else {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the group's state: the shared learner state, and this rank's own replay shard."""
        state = dict(state)
        self._offset = int(state.pop("shard_offset", 0))
        shards = state.pop("replay_shards", None)
        if self.rank > 0:
            state.pop("tables", None)
            if shards is not None and str(self.rank) in shards:
                state["tables"] = shards[str(self.rank)]
        super().load_state(state)


class GroupFuture(Future):
    """Every rank's result of one call made to all ranks: rank 0's value once every rank is done.

    The first rank to fail raises its own error (with a note naming the rank) and the other ranks are
    stopped, since they would wait in their next collective for a peer that is not coming. Ranks work
    in lockstep, so once one rank is done the others must be done within ``skew_timeout_s``;
    ``timeout_s`` bounds the whole wait (None: only the skew is bounded, for calls of any length).
    """

    def __init__(self, futures: Sequence[Future], names: Sequence[str], wait_one: Callable[[list[Future], float], list[Future]],
                 on_error: Callable[[], None], skew_timeout_s: float, timeout_s: float | None = None, what: str = "call") -> None:
        self.futures, self.names = list(futures), list(names)
        self._wait_one, self._on_error = wait_one, on_error
        self.skew_timeout_s, self.timeout_s, self.what = skew_timeout_s, timeout_s, what
        self._value: Any = None
        self._done = False
        self.consumed = False
        """Whether :meth:`result` was called (its error, if any, reached the caller)."""

    @property
    def ref(self) -> Any:
        """Rank 0's object reference, where the backend's futures have one (Ray): ``backend.wait`` on this future
        waits for rank 0, and ``result`` then for the others (in lockstep, close behind)."""
        return self.futures[0].ref  # type: ignore[attr-defined]  # AttributeError where futures have none

    def result(self) -> Any:
        """Rank 0's value, once every rank finished; the first rank error as itself, naming its rank."""
        self.consumed = True
        if self._done:
            return self._value
        t0 = time.monotonic()
        deadline = None if self.timeout_s is None else t0 + self.timeout_s
        pending = dict(enumerate(self.futures))
        values: dict[int, Any] = {}
        while pending:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                late = ", ".join(self.names[r] for r in sorted(pending))
                self._on_error()
                raise ShoalError(f"learner rank(s) {late} did not finish {self.what} within {deadline - t0:.0f} s; "
                                 "see the ranks' output above, or raise the group's timeout")
            step = 1.0 if deadline is None else max(0.0, min(1.0, deadline - now))
            ready = self._wait_one(list(pending.values()), step)
            for r in [r for r, f in pending.items() if any(f is g for g in ready)]:
                f = pending.pop(r)
                try:
                    values[r] = f.result()
                except BaseException as e:
                    self._on_error()
                    e.add_note(f"(raised on learner rank {r}, {self.names[r]!r}, during {self.what}; "
                               "the other ranks were stopped)")
                    raise
                if values and (deadline is None or deadline > time.monotonic() + self.skew_timeout_s):
                    deadline = time.monotonic() + self.skew_timeout_s  # lockstep: the others are close behind
        self._value, self._done = values[0], True
        return self._value


class LearnerGroup(NodeHandle):
    """L learner ranks behind one handle: rank 0 answers reads, every rank takes part in updates.

    ``learn``, ``train`` and ``load_state`` go to every rank and return a :class:`GroupFuture` (rank 0's
    value once every rank is done; the first rank error, naming its rank, stops the group); ``state``
    is rank 0's plus the other ranks' replay shards; any other call goes to rank 0.
    """

    ALL_RANKS = frozenset({"learn", "train", "load_state"})

    def __init__(self, backend: Backend | None, cls: type, ctx: NodeContext, num_learners: int, *args: Any,
                 name: str = "learner", timeout_s: float = 300.0, start_timeout_s: float = 300.0) -> None:
        if num_learners < 2:
            raise ValueError(f"a learner group needs at least 2 learners, got {num_learners}")
        rank_context(ctx, num_learners)  # a batch that does not split is an error before anything starts
        self.num_learners = num_learners
        self.backend = backend
        self.timeout_s = timeout_s
        self.names = [f"{name}-{r}" for r in range(num_learners)]
        spawn_group = getattr(backend, "spawn_group", None)
        self._owned: list[ProcessHandle] = []
        self._pending: list[Future] = []
        if callable(spawn_group):  # Ray: the ranks are actors in one placement group
            self.ranks: list[NodeHandle] = spawn_group(cls, [(ctx, r, num_learners, *args) for r in range(num_learners)],
                                                       num_gpus=learner_gpus(ctx.device), names=self.names)
        else:  # one spawned process per rank
            devices = rank_devices(ctx.device, num_learners)
            self._owned = [ProcessHandle(cls, dataclasses.replace(ctx, device=devices[r]), r, num_learners, *args,
                                         name=self.names[r], start_timeout_s=start_timeout_s) for r in range(num_learners)]
            self.ranks = list(self._owned)
        try:
            # Every rank is built before any of them waits for the others: a constructor's error surfaces at once.
            self._all("started", timeout_s=start_timeout_s, what="start").result()
            host, port = self.ranks[0].call("rendezvous_address", timeout_s).result()
            rendezvous = Rendezvous(host, port, num_learners, group_backend(ctx.device), timeout_s)
            self._all("join", rendezvous, timeout_s=timeout_s + 30.0, what="joining the group").result()
        except BaseException:
            self.close()
            raise

    def _wait_one(self, futures: list[Future], timeout: float) -> list[Future]:
        """The futures of ``futures`` that are done within ``timeout`` seconds (at least one, unless none is)."""
        if all(callable(getattr(f, "done", None)) for f in futures):  # process futures: poll
            end = time.monotonic() + timeout
            while True:
                ready = [f for f in futures if f.done()]  # type: ignore[attr-defined]
                if ready or time.monotonic() >= end:
                    return ready
                time.sleep(0.005)
        assert self.backend is not None, "futures without done() come from a backend's handles"
        return self.backend.wait(futures, num_returns=1, timeout=timeout)[0]

    def _stop_ranks(self) -> None:
        """Stop every rank (after one failed: the others would wait for it in their next collective)."""
        for h in self.ranks:
            kill = getattr(h, "kill", None)
            if callable(kill):
                try:
                    kill()
                except Exception:
                    pass

    def _all(self, method: str, *args: Any, timeout_s: float | None = None, what: str = "", **kwargs: Any) -> GroupFuture:
        futures = [h.call(method, *args, **kwargs) for h in self.ranks]
        return GroupFuture(futures, self.names, self._wait_one, self._stop_ranks, self.timeout_s, timeout_s,
                           what or repr(method))

    def call(self, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> Any:
        self._check_pending()
        if method == "state":
            state = dict(self.ranks[0].call("state").result())
            shards = [h.call("shard_state").result() for h in self.ranks[1:]]
            if any("tables" in s for s in shards):
                state["replay_shards"] = Detachable({str(r): s["tables"] for r, s in enumerate(shards, 1) if "tables" in s})
            return Ready(state)
        if method in self.ALL_RANKS:
            future = self._all(method, *args, **kwargs)
            self._pending = [future]
            return future
        return self.ranks[0].call(method, *args, num_returns=num_returns, **kwargs)

    def scatter(self, method: str, shares: Sequence[Any], timeout_s: float | None = None, what: str = "") -> GroupFuture:
        """Call ``method`` on every rank with an argument of its own (``shares[r]`` to rank ``r``); as a call to all
        ranks, rank 0's value once every rank is done, the first rank error naming its rank."""
        self._check_pending()
        if len(shares) != self.num_learners:
            raise ValueError(f"scatter needs one share per rank ({self.num_learners}), got {len(shares)}")
        futures = [h.call(method, share) for h, share in zip(self.ranks, shares)]
        return GroupFuture(futures, self.names, self._wait_one, self._stop_ranks, self.timeout_s, timeout_s,
                           what or repr(method))

    def each(self, method: str, *args: Any) -> list[Any]:
        """Call ``method`` on every rank and return their results in rank order (tests, diagnostics)."""
        self._check_pending()
        group = self._all(method, *args)
        group.result()
        return [f.result() for f in group.futures]

    def _check_pending(self) -> None:
        pending, self._pending = self._pending, []
        for f in pending:
            if isinstance(f, GroupFuture) and not f.consumed:
                f.result()  # a call to every rank the caller never waited for: its rank errors surface here

    def close(self) -> None:
        """Stop the ranks this group started itself (Ray's are stopped with the backend)."""
        for h in self._owned:
            h.close()
        self._owned = []


def rank_devices(device: str, num_learners: int) -> list[str]:
    """Each rank's device on one host: for CUDA a GPU of its own, consecutive from the one ``device`` names
    (``cuda`` and ``cuda:0``: ``cuda:0`` .. ``cuda:L-1``; ``cuda:1``: ``cuda:1`` .. ``cuda:L``; NCCL cannot put two
    ranks on one GPU), else ``device``; an error when the host has too few GPUs from there on."""
    if not str(device).startswith("cuda"):
        return [device] * num_learners
    import torch

    try:
        first = torch.device(device).index
    except RuntimeError:
        raise ConfigError(f"device={device!r} is not a CUDA device name; use cuda or cuda:N") from None
    have = torch.cuda.device_count()
    if first is None:
        if have < num_learners:
            raise ConfigError(f"num_learners={num_learners} learner processes on device={device!r} need one GPU each, "
                              f"this machine has {have}; lower num_learners to {max(have, 1)}, use device=cpu (gloo), "
                              "or run on Ray across more GPUs")
        first = 0
    elif first + num_learners > have:
        raise ConfigError(f"num_learners={num_learners} learner processes on device={device!r} need one GPU each, "
                          f"cuda:{first} to cuda:{first + num_learners - 1}, but this machine has {have} GPUs; "
                          f"lower num_learners to {max(have - first, 1)} or start at a lower GPU (device=cuda counts "
                          "from cuda:0)")
    return [f"cuda:{first + r}" for r in range(num_learners)]


def spawn_learners(backend: Backend, cls: type, ctx: NodeContext, num_learners: int, *args: Any,
                   single: type | None = None, name: str = "learner") -> NodeHandle:
    """The topology's learner handle: one ``single`` node (``cls`` minus the rank arguments) or a group of ``cls`` ranks."""
    if num_learners == 1:
        return backend.spawn(single or LearnerNode, ctx, *args, name=name, num_gpus=learner_gpus(ctx.device))
    return LearnerGroup(backend, cls, ctx, num_learners, *args, name=name)

