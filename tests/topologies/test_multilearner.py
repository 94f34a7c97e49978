"""Learner groups: L ranks in separate processes (real gloo groups) take one learner's step on the whole batch."""

from __future__ import annotations

import copy
from dataclasses import asdict

import numpy as np
import pytest
import torch

from shoal.agents import registry
from shoal.backends.inprocess import InProcessBackend
from shoal.config import build
from shoal.envs import env_spec
from shoal.errors import ConfigError
from shoal.settings import RunConfig
from shoal.topologies.learners import LearnerGroup, LearnerRankNode
from shoal.topologies.local import LocalProgram
from shoal.topologies.nodes import ActorNode, NodeContext


def _ctx(algo: str, steps: int = 20_000, **agent) -> NodeContext:
    spec = registry.get(algo)
    return NodeContext(algo, asdict(build(spec.config_cls(), agent)), "CartPole-v1", env_spec("CartPole-v1"), steps, seed=4)


def _rollout(ctx: NodeContext, T: int = 16):
    actor = ActorNode(ctx, 0, 1, env_seed=11, actor_seed=12)
    _, rollout = actor.run(T)
    actor.close()
    return rollout


def _dqn_batch(n: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"obs": rng.normal(size=(n, 4)).astype(np.float32), "action": rng.integers(0, 2, n),
            "reward": rng.normal(size=n).astype(np.float32), "discount": (0.99 * (rng.random(n) > 0.1)).astype(np.float32),
            "next_obs": rng.normal(size=(n, 4)).astype(np.float32)}


def _alone(ctx: NodeContext, batch, repeats: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    node = LearnerRankNode(ctx, 0, 1)  # world size 1: no group, the learner alone on the whole batch
    assert node.learner.collective is None
    metrics = node.update(copy.deepcopy(batch), repeats)
    return node.get_variables()[1], metrics


def _grouped(ctx: NodeContext, batch, repeats: int) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, float]]]:
    group = LearnerGroup(InProcessBackend(), LearnerRankNode, ctx, 2, timeout_s=60)
    try:
        metrics = group.each("update", batch, repeats)
        return [v[1] for v in group.each("get_variables")], metrics
    finally:
        group.close()


def _assert_identical(states: list[dict[str, torch.Tensor]]) -> None:
    for s in states[1:]:
        assert set(s) == set(states[0])
        for k in s:
            assert torch.equal(s[k], states[0][k]), f"rank parameters differ at {k}"


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> None:
    moved = 0
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=1e-4, atol=1e-5), k
        moved += int(not torch.equal(a[k], start[k]))
    assert moved > 0, "the step changed no parameter"


# Full-batch epochs (minibatch_size=0): each epoch's gradient is the whole batch's, so the step is
# exactly defined for a split batch. Advantage and observation normalisation, value clipping, gradient
# clipping and the adaptive KL penalty all span the whole batch.
PPO_CASES = {
    "clip": dict(epochs=4, minibatch_size=0, normalize_obs=True, clip_value_loss=True, max_grad_norm=0.5, ent_coef=0.01),
    "kl_penalty": dict(epochs=3, minibatch_size=0, loss="kl_penalty", normalize_obs=False),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(PPO_CASES))
def test_ppo_two_learners_with_halves_step_like_one_with_the_whole_batch(case):
    ctx = _ctx("ppo", num_envs=8, rollout_length=16, **PPO_CASES[case])
    start = {k: v.clone() for k, v in ctx.builder().make_networks().state_dict().items()}
    batch = _rollout(ctx)
    alone, alone_m = _alone(ctx, batch, repeats=2)
    ranks, ranks_m = _grouped(ctx, batch, repeats=2)
    _assert_identical(ranks)
    _assert_close(ranks[0], alone, start)
    assert alone_m["shard_samples"] == 16 * 8
    assert [m["shard_samples"] for m in ranks_m] == [16 * 4, 16 * 4]  # each rank computed on B/L
    assert all(m["allreduce_s"] > 0 for m in ranks_m) and alone_m["allreduce_s"] == 0


DQN_SETTINGS = dict(batch_size=64, double=True, target_update_interval=2, max_grad_norm=10.0, hidden=[32, 32])


@pytest.fixture(scope="module")
def dqn_group():
    """Two DQN learner ranks in processes of their own (one group for the tests below: starting one takes seconds)."""
    group = LearnerGroup(InProcessBackend(), LearnerRankNode, _ctx("dqn", **DQN_SETTINGS), 2, timeout_s=60)
    yield group
    group.close()


@pytest.mark.timeout(120)
def test_dqn_two_learners_with_halves_step_like_one_with_the_whole_batch(dqn_group):
    ctx = _ctx("dqn", **DQN_SETTINGS)
    start = {k: v.clone() for k, v in ctx.builder().make_networks().state_dict().items()}
    alone, alone_m = _alone(ctx, _dqn_batch(64), repeats=3)  # the third step learns against a synced target
    ranks_m = dqn_group.each("update", _dqn_batch(64), 3)
    ranks = [v[1] for v in dqn_group.each("get_variables")]
    _assert_identical(ranks)
    _assert_close(ranks[0], alone, start)
    assert [m["shard_samples"] for m in ranks_m] == [32, 32] and alone_m["shard_samples"] == 64


@pytest.mark.timeout(120)
def test_a_batch_that_does_not_split_evenly_is_refused(dqn_group):
    # the fixture's last user: a rank error stops every rank of the group
    with pytest.raises(ConfigError, match="63 does not split into 2 equal learner shards"):
        dqn_group.each("update", _dqn_batch(63))
    with pytest.raises(ConfigError, match="batch_size=63 does not split into 2"):
        LearnerGroup(InProcessBackend(), LearnerRankNode, _ctx("dqn", batch_size=63), 2)  # refused before any start


def _assert_disjoint_balanced_shards(shards: list[dict]) -> None:
    """The ranks' replay shards hold no item twice and their sizes differ by at most one."""
    rows = [s["tables"]["replay"]["storage"]["fields"] for s in shards]
    sizes = [len(r["obs"]) for r in rows]
    assert min(sizes) > 0 and max(sizes) - min(sizes) <= 1, f"unbalanced replay shards: {sizes}"
    keys = [{(o.tobytes(), n.tobytes()) for o, n in zip(r["obs"], r["next_obs"])} for r in rows]
    assert sum(len(k) for k in keys) == sum(sizes) and not keys[0] & keys[1], "replay shards share items"


def _run(program: LocalProgram, iterations: int) -> None:
    for _ in range(iterations):
        program.run_iteration()


@pytest.mark.timeout(120)
def test_ppo_ranks_stay_identical_through_minibatch_epochs_in_the_local_topology():
    ctx = _ctx("ppo", num_envs=4, rollout_length=16, epochs=3, minibatch_size=32)
    program = LocalProgram(ctx, RunConfig(num_actors=2, num_learners=2), InProcessBackend())
    try:
        before = program.backend.get(program.learner.call("get_variables"))[1]
        _run(program, 3)
        group = program.learner
        assert isinstance(group, LearnerGroup)
        versions, states = zip(*group.each("get_variables"))
        assert versions == (3, 3)
        _assert_identical(list(states))
        assert any(not torch.equal(before[k], states[0][k]) for k in before)
        # rank 0 answers for the group: what the actors and evaluation get is rank 0's
        assert program.backend.get(program.learner.call("get_variables"))[0] == 3
    finally:
        program.close()


@pytest.mark.timeout(120)
def test_dqn_ranks_sample_their_own_replay_shards_and_checkpoint_them(tree_differences):
    ctx = _ctx("dqn", steps=4_000, num_envs=4, batch_size=32, train_freq=32, gradient_steps=2, learning_starts=64,
               prioritized=True, hidden=[32, 32])
    program = LocalProgram(ctx, RunConfig(num_actors=2, num_learners=2), InProcessBackend())
    try:
        _run(program, 6)
        group = program.learner
        assert isinstance(group, LearnerGroup)
        versions, states = zip(*group.each("get_variables"))
        assert versions[0] == versions[1] > 0
        _assert_identical(list(states))
        shards = group.each("shard_state")
        _assert_disjoint_balanced_shards(shards)  # every rank holds a replay shard of its own
        state = program.state()
        assert "replay_shards" in state["learner_node"]
        _run(program, 2)  # the learners and their shards move on ...
        assert tree_differences(shards, group.each("shard_state")) != []
        program.load_state(state)  # ... and come back: every rank restores its own shard
        assert tree_differences(shards, group.each("shard_state")) == []
        assert tree_differences(group.each("get_variables")[1][1], states[0]) == []
    finally:
        program.close()


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_ray_learner_ranks_share_a_placement_group_and_stay_identical():
    import ray
    from ray.util.placement_group import placement_group_table

    from shoal.backends.ray import RayBackend

    ctx = _ctx("ppo", num_envs=4, rollout_length=16, epochs=2, minibatch_size=32)
    backend = RayBackend()
    program = LocalProgram(ctx, RunConfig(num_actors=2, num_learners=2, backend="ray"), backend)
    try:
        groups = [g for g in placement_group_table().values() if g["state"] == "CREATED"]
        assert any(len(g["bundles"]) == 2 and g["strategy"] == "PACK" for g in groups)
        _run(program, 2)
        versions, states = zip(*program.learner.each("get_variables"))
        assert versions == (2, 2)
        _assert_identical(list(states))
    finally:
        program.close()
    assert ray.is_initialized()  # the session's Ray instance is the caller's, left running


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_impala_ranks_take_their_own_unrolls_and_stay_identical_on_ray():
    from shoal.backends.ray import RayBackend
    from shoal.topologies.impala import ImpalaProgram, ImpalaSettings

    ctx = _ctx("impala", num_envs=4, rollout_length=16)
    program = ImpalaProgram(ctx, RunConfig(num_actors=2, num_learners=2, backend="ray", steps=20_000), RayBackend(),
                            ImpalaSettings(batch_unrolls=2))
    try:
        metrics: dict[str, float] = {}
        for _ in range(30):
            metrics.update(program.run_iteration().metrics)
            if metrics.get("learner_env_steps", 0) >= 4 * 2 * 64:
                break
        versions, states = zip(*program.learner.each("get_variables"))
        assert versions[0] == versions[1] >= 4
        _assert_identical(list(states))
        # every update took B = 2 unrolls of 4 x 16 steps in all (B/L = 1 per rank), none more, none fewer
        assert metrics["learner_env_steps"] == versions[0] * 2 * 64
    finally:
        program.close()


@pytest.mark.timeout(120)
def test_a_learner_without_gradient_averaging_is_refused_with_its_reason():
    from shoal.backends.process import ProcessHandle

    spec = registry.get("sac")
    ctx = NodeContext("sac", asdict(build(spec.config_cls(), {})), "Pendulum-v1", env_spec("Pendulum-v1"), 1000, seed=0)
    node = ProcessHandle(LearnerRankNode, ctx, 0, 2, name="sac-rank")
    try:
        with pytest.raises(ConfigError, match="sac's learner cannot average gradients"):
            node.call("rendezvous_address").result()  # a node that failed to build answers with its error
    finally:
        node.close()


def test_topologies_with_one_learner_refuse_learner_groups(tmp_path):
    import shoal

    with pytest.raises(ConfigError, match="the apex topology runs one learner"):
        shoal.train("dqn", "CartPole-v1", steps=500, topology="apex", run_dir=tmp_path / "r", overrides={"num_learners": 2})


@pytest.mark.timeout(120)
def test_dqn_ranks_fed_fewer_items_than_a_round_needs_are_refused():
    ctx = _ctx("dqn", steps=4_000, num_envs=1, batch_size=8, train_freq=1, learning_starts=8, hidden=[16])
    program = LocalProgram(ctx, RunConfig(num_actors=1, num_learners=2), InProcessBackend())
    try:
        with pytest.raises(ConfigError, match="a round yields 1 replay items, fewer than num_learners=2"):
            _run(program, 20)
    finally:
        program.close()


@pytest.mark.timeout(120)
def test_dqn_ranks_learn_from_rounds_that_do_not_split_evenly():
    # 3 items a round for 2 ranks: dealt in turn, every rank fills its shard and the group updates
    ctx = _ctx("dqn", steps=4_000, num_envs=3, batch_size=8, train_freq=1, learning_starts=8, hidden=[16])
    program = LocalProgram(ctx, RunConfig(num_actors=1, num_learners=2), InProcessBackend())
    try:
        _run(program, 20)  # 60 env steps
        group = program.learner
        assert isinstance(group, LearnerGroup)
        versions, states = zip(*group.each("get_variables"))
        assert versions[0] == versions[1] >= 40, f"the group made {versions} updates in 60 env steps"
        _assert_identical(list(states))
        _assert_disjoint_balanced_shards(group.each("shard_state"))
    finally:
        program.close()


def test_dqn_ranks_sample_their_shards_with_generators_of_their_own():
    ctx = _ctx("dqn", batch_size=8, buffer_size=64, hidden=[16])
    ranks = [LearnerRankNode(ctx, r, 2) for r in range(2)]  # built here, no group: sampling needs none
    items = _dqn_batch(16)
    tables = [next(iter(node.tables.values())) for node in ranks]
    for t in tables:
        t.insert({k: v.copy() for k, v in items.items()})
    draws = [t.selector.sample(8)[0] for t in tables]
    assert not np.array_equal(draws[0], draws[1]), "both ranks drew the same slots"
    again = LearnerRankNode(ctx, 1, 2)  # a rank's generator is its rank's: the same on a rebuild
    t = next(iter(again.tables.values()))
    t.insert({k: v.copy() for k, v in items.items()})
    assert np.array_equal(t.selector.sample(8)[0], draws[1])


@pytest.mark.timeout(60)
def test_a_rank_that_dies_mid_call_fails_the_call_at_once_naming_it():
    import threading
    import time

    from shoal.errors import ShoalError

    group = LearnerGroup(InProcessBackend(), LearnerRankNode, _ctx("dqn", **DQN_SETTINGS), 2, timeout_s=60)
    try:
        pending = group._all("update", _dqn_batch(64), 100_000)  # long enough to be killed in the middle
        threading.Timer(1.0, group._owned[1].kill).start()
        t0 = time.monotonic()
        # The first error to arrive: rank 1's (its process is gone) or rank 0's (its peer vanished mid-reduce).
        with pytest.raises((ShoalError, RuntimeError)) as info:
            pending.result()
        assert time.monotonic() - t0 < 20  # not rank 0 waiting out its 60 s collective timeout
        assert any("learner rank" in note and "the other ranks were stopped" in note for note in info.value.__notes__)
        for h in group._owned:  # every rank is stopped, none left waiting for a peer
            assert h.process.wait(10) is not None
    finally:
        group.close()


class _FakeFuture:
    def __init__(self, value=None, error: BaseException | None = None, done: bool = True) -> None:
        self.value, self.error, self.is_done = value, error, done

    def done(self) -> bool:
        return self.is_done

    def result(self):
        if not self.is_done:
            raise AssertionError("waited on a call that never finishes")
        if self.error is not None:
            raise self.error
        return self.value


class _FakeRank:
    """A rank handle that answers ``started`` with ``start_error`` and never finishes a ``join``."""

    def __init__(self, start_error: BaseException | None = None) -> None:
        self.start_error, self.killed = start_error, False
        self.calls: list[str] = []

    def call(self, method: str, *args, **kwargs):
        self.calls.append(method)
        if method == "started":
            return _FakeFuture(True, self.start_error)
        if method == "rendezvous_address":
            return _FakeFuture(("127.0.0.1", 1))
        return _FakeFuture(done=False)  # join: blocks until every rank joined, which a broken rank never does

    def kill(self) -> None:
        self.killed = True


@pytest.mark.timeout(30)
def test_a_later_ranks_constructor_error_is_raised_at_once_before_the_ranks_meet():
    import time

    error = ValueError("rank 1 could not build its learner")
    ranks = [_FakeRank(), _FakeRank(error)]

    class Backend(InProcessBackend):
        def spawn_group(self, cls, args, num_gpus=0, names=()):
            return ranks

    t0 = time.monotonic()
    with pytest.raises(ValueError, match="rank 1 could not build") as info:
        LearnerGroup(Backend(), LearnerRankNode, _ctx("dqn", **DQN_SETTINGS), 2, timeout_s=20, start_timeout_s=20)
    assert time.monotonic() - t0 < 5  # neither the start nor the join timeout
    assert info.value is error and any("learner rank 1" in n for n in info.value.__notes__)
    assert all("join" not in r.calls and "rendezvous_address" not in r.calls for r in ranks)  # nobody waits to meet
    assert all(r.killed for r in ranks)
