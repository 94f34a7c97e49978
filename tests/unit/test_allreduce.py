"""The learner group's collectives against hand-computed values (real gloo groups, ranks on threads)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch

from shoal.core.distributed import Collective, Rendezvous, free_port, shard_bounds
from shoal.core.types import Rollout
from shoal.errors import ConfigError
from shoal.topologies.learners import rank_context, shard_items, shard_rollout


def _on_ranks(world: int, fn):
    """Run ``fn(collective)`` on ``world`` ranks of one fresh gloo group; results in rank order."""
    rv = Rendezvous("127.0.0.1", free_port("127.0.0.1"), world, timeout_s=30)
    barrier = threading.Barrier(world)

    def rank(r: int):
        c = Collective(r, rv)
        try:
            return fn(c)
        finally:
            barrier.wait(timeout=30)  # no rank leaves (closing its sockets) while another still reduces
            c.close()

    with ThreadPoolExecutor(world) as pool:
        return [f.result(timeout=60) for f in [pool.submit(rank, r) for r in range(world)]]


def test_average_gradients_is_the_mean_of_every_rank_gradient():
    def fn(c: Collective):
        torch.manual_seed(0)
        lin = torch.nn.Linear(3, 2)
        x = torch.full((1, 3), float(c.rank + 1))
        lin(x).sum().backward()  # d/dW = x (per output row), d/db = 1
        c.average_gradients(lin.parameters())
        assert lin.weight.grad is not None and lin.bias.grad is not None
        return lin.weight.grad.clone(), lin.bias.grad.clone(), c.reductions

    outs = _on_ranks(2, fn)
    for w, b, n in outs:
        assert torch.equal(w, torch.full((2, 3), 1.5))  # (1 + 2) / 2
        assert torch.equal(b, torch.ones(2))
        assert n == 1


def test_missing_gradients_count_as_zeros():
    def fn(c: Collective):
        p = torch.nn.Parameter(torch.zeros(2))
        if c.rank == 0:
            p.grad = torch.tensor([2.0, 4.0])
        c.average_gradients([p])
        return p.grad

    for g in _on_ranks(2, fn):
        assert torch.equal(g, torch.tensor([1.0, 2.0]))


def test_standardize_uses_the_statistics_of_the_whole_batch():
    data = torch.tensor([1.0, 2.0, 4.0, 8.0, -3.0, 0.5])
    whole = (data - data.mean()) / (data.std() + 1e-8)
    outs = _on_ranks(2, lambda c: c.standardize(data[3 * c.rank:3 * c.rank + 3]))
    assert torch.allclose(torch.cat(outs), whole, atol=1e-6)


def test_gather_mean_and_agreement():
    def fn(c: Collective):
        x = torch.tensor([[c.rank, 10 + c.rank]], dtype=torch.float32)
        return c.gather(x, 1), c.mean(torch.tensor(float(c.rank))), c.all_true(c.rank == 0), c.all_true(True)

    for gathered, mean, some, every in _on_ranks(2, fn):
        assert torch.equal(gathered, torch.tensor([[0.0, 10.0, 1.0, 11.0]]))
        assert float(mean) == 0.5
        assert some is False and every is True


def test_broadcast_copies_rank_zero_tensors():
    def fn(c: Collective):
        ts = [torch.full((2,), float(c.rank)), torch.full((1, 3), 5.0 + c.rank)]
        c.broadcast(ts)
        return ts

    for a, b in _on_ranks(2, fn):
        assert torch.equal(a, torch.zeros(2)) and torch.equal(b, torch.full((1, 3), 5.0))


def test_shard_bounds_split_evenly_or_refuse():
    assert [shard_bounds(8, r, 2) for r in range(2)] == [(0, 4), (4, 8)]
    assert shard_bounds(9, 2, 3) == (6, 9)
    with pytest.raises(ConfigError, match="does not split into 2"):
        shard_bounds(7, 0, 2)


def _rollout(T: int = 3, B: int = 4) -> Rollout:
    rng = np.random.default_rng(0)
    r = Rollout(rng.normal(size=(T, B, 2)).astype(np.float32), rng.integers(0, 2, (T, B)), rng.normal(size=(T, B)),
                None, rng.normal(size=(T, B)), np.zeros((T, B), bool), np.zeros((T, B), bool), None, None,
                extras={"policy_params": rng.normal(size=(T, B, 2))}, policy_version=7,
                last_obs=rng.normal(size=(B, 2)).astype(np.float32))
    r.final_t, r.final_b = np.array([0, 2, 1]), np.array([1, 2, 3])
    r.final_obs = rng.normal(size=(3, 2)).astype(np.float32)
    return r


def test_shard_rollout_takes_whole_env_columns_and_their_final_observations():
    r = _rollout()
    s = shard_rollout(r, 1, 2)  # columns 2, 3
    assert np.array_equal(s.obs, r.obs[:, 2:]) and np.array_equal(s.rewards, r.rewards[:, 2:])
    assert np.array_equal(s.extras["policy_params"], r.extras["policy_params"][:, 2:])
    assert np.array_equal(s.last_obs, r.last_obs[2:]) and s.policy_version == 7
    assert s.final_b.tolist() == [0, 1] and s.final_t.tolist() == [2, 1]
    assert np.array_equal(s.final_obs, r.final_obs[1:])
    back = Rollout.concat([shard_rollout(r, 0, 2), s])
    assert np.array_equal(back.obs, r.obs) and back.final_b.tolist() == sorted(r.final_b.tolist())
    with pytest.raises(ConfigError, match="does not split into 3"):
        shard_rollout(r, 0, 3)


def test_shard_items_deal_the_batch_round_robin_once():
    items = {"obs": np.arange(10), "priority": np.arange(10) * 2.0}
    parts = [shard_items(items, r, 3) for r in range(3)]
    assert [p["obs"].tolist() for p in parts] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert all(np.array_equal(p["priority"], p["obs"] * 2.0) for p in parts)
    assert sorted(np.concatenate([p["obs"] for p in parts]).tolist()) == items["obs"].tolist()
    # an offset starts the deal at another rank: item i goes to rank (offset + i) % L
    assert [shard_items(items, r, 3, offset=2)["obs"].tolist()[:2] for r in range(3)] == [[1, 4], [2, 5], [0, 3]]


def test_shard_items_advancing_the_offset_feeds_every_rank_from_batches_smaller_than_the_group():
    got: dict[int, list[int]] = {0: [], 1: [], 2: []}
    offset = 0
    for b in range(6):  # batches of 1 and 2 items, fewer than 3 ranks
        batch = {"obs": np.arange(b * 10, b * 10 + 1 + b % 2)}
        for r in got:
            got[r] += shard_items(batch, r, 3, offset)["obs"].tolist()
        offset = (offset + len(batch["obs"])) % 3
    # the items in order, 0 10 11 20 30 31 40 50 51, dealt to ranks 0 1 2 0 1 2 0 1 2
    assert got == {0: [0, 20, 40], 1: [10, 30, 50], 2: [11, 31, 51]}


def test_rank_context_divides_the_batch_and_the_replay():
    from shoal.envs import env_spec
    from shoal.topologies.nodes import NodeContext

    ppo = NodeContext("ppo", {"minibatch_size": 64, "epochs": 4}, "CartPole-v1", env_spec("CartPole-v1"), 1000, 0)
    assert rank_context(ppo, 2).agent_config == {"minibatch_size": 32, "epochs": 4}
    dqn = NodeContext("dqn", {"batch_size": 128, "buffer_size": 1001}, "CartPole-v1", env_spec("CartPole-v1"), 1000, 0)
    assert rank_context(dqn, 2).agent_config == {"batch_size": 64, "buffer_size": 501}
    with pytest.raises(ConfigError, match="batch_size=128 does not split into 3"):
        rank_context(dqn, 3)


def test_sum_and_max_return_tensors_on_the_callers_device_and_reduce():
    def fn(c: Collective):
        x = torch.tensor([1.0 + c.rank, 5.0 - 3 * c.rank], dtype=torch.float64)
        return c.sum(x), c.max(x), x

    for total, largest, x in _on_ranks(2, fn):
        assert torch.equal(total, torch.tensor([3.0, 7.0], dtype=torch.float64))
        assert torch.equal(largest, torch.tensor([2.0, 5.0], dtype=torch.float64))
        assert total.device == x.device


# -- gradient equivalence: L ranks' averaged gradient is one learner's gradient of the whole (mini)batch ------------
# Compared before the optimiser step (Adam's first step, lr * sign(g), and clipping would hide a wrong scale).

def _ctx(algo: str, **agent):
    from dataclasses import asdict

    from shoal.agents import registry
    from shoal.config import build
    from shoal.envs import env_spec
    from shoal.topologies.nodes import NodeContext

    spec = registry.get(algo)
    return NodeContext(algo, asdict(build(spec.config_cls(), agent)), "CartPole-v1", env_spec("CartPole-v1"), 20_000, seed=4)


def _recording_learner(ctx, world: int):
    """A learner of rank context ``ctx`` whose optimiser records the flat gradient it is about to apply."""
    from shoal.nets.flat import flat_grad
    from shoal.topologies.nodes import LearnerNode

    node = LearnerNode(rank_context(ctx, world))
    learner: Any = node.learner
    params = [p for g in learner.opt.param_groups for p in g["params"]]
    grads: list[torch.Tensor] = []
    step = learner.opt.step

    def recording_step(*a, **k):
        grads.append(flat_grad(params).double().clone())
        return step(*a, **k)

    learner.opt.step = recording_step
    return learner, grads


def _alone_and_ranks(ctx, world: int, alone_fn, rank_fn):
    """Gradients recorded by one learner (``alone_fn(learner)``) and by each of ``world`` ranks (``rank_fn``)."""
    learner, alone = _recording_learner(ctx, 1)
    alone_fn(learner)

    built = [_recording_learner(ctx, world) for _ in range(world)]  # here: seeding the weights is process-wide

    def fn(c: Collective):
        learner, grads = built[c.rank]
        learner.collective = c
        rank_fn(learner, c.rank)
        return grads

    return alone, _on_ranks(world, fn)


def _assert_same_gradients(alone, ranks, steps: int) -> None:
    assert len(alone) == steps and all(len(g) == steps for g in ranks)
    for k in range(steps):
        assert alone[k].abs().max() > 1e-3, "a vanishing gradient tells nothing"
        for grads in ranks:
            diff = float((grads[k] - alone[k]).abs().max())
            assert diff <= 1e-6, f"step {k}: the ranks' averaged gradient differs from the whole batch's by {diff:.3g}"


PPO_GRADIENT_CASES = {
    "clip_full_batch": dict(epochs=2, minibatch_size=0, normalize_obs=True, clip_value_loss=True, ent_coef=0.01),
    "clip_minibatches": dict(epochs=2, minibatch_size=32, normalize_obs=True, clip_value_loss=True, ent_coef=0.01),
    "kl_penalty": dict(epochs=2, minibatch_size=0, loss="kl_penalty"),
    "kl_penalty_minibatches": dict(epochs=2, minibatch_size=16, loss="kl_penalty"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(PPO_GRADIENT_CASES))
def test_ppo_ranks_average_to_the_whole_batch_gradient(case):
    import copy

    from shoal.topologies.nodes import ActorNode

    ctx = _ctx("ppo", num_envs=8, rollout_length=16, max_grad_norm=0.0, **PPO_GRADIENT_CASES[case])
    actor = ActorNode(ctx, 0, 1, env_seed=11, actor_seed=12)
    _, rollout = actor.run(16)
    actor.close()
    alone, ranks = _alone_and_ranks(ctx, 2, lambda lrn: lrn.step(copy.deepcopy(rollout)),
                                    lambda lrn, r: lrn.step(shard_rollout(copy.deepcopy(rollout), r, 2)))
    mb = PPO_GRADIENT_CASES[case]["minibatch_size"]
    _assert_same_gradients(alone, ranks, steps=2 * (128 // mb if mb else 1))


def _dqn_items(n: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"obs": rng.normal(size=(n, 4)).astype(np.float32), "action": rng.integers(0, 2, n),
            "reward": rng.normal(size=n).astype(np.float32), "discount": (0.99 * (rng.random(n) > 0.1)).astype(np.float32),
            "next_obs": rng.normal(size=(n, 4)).astype(np.float32)}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("prioritized", [False, True])
def test_dqn_ranks_average_to_the_whole_batch_gradient(prioritized):
    ctx = _ctx("dqn", batch_size=64, double=True, target_update_interval=2, max_grad_norm=0.0, hidden=[32, 32],
               prioritized=prioritized)
    items = _dqn_items(64)
    # sampling probabilities as a prioritized table returns them (from a table of 500 items)
    probs = np.random.default_rng(5).uniform(0.5, 4.0, 64) / 1000.0 if prioritized else None
    share = lambda x, r: None if x is None else x[r::2]  # noqa: E731  (shard_items' round-robin deal)

    def alone(lrn):
        for _ in range(3):
            lrn.update(items, probs, 500)

    def rank(lrn, r):
        for _ in range(3):
            lrn.update(shard_items(items, r, 2), share(probs, r), 500)

    _assert_same_gradients(*_alone_and_ranks(ctx, 2, alone, rank), steps=3)


# -- one call to every rank: the first rank error, as itself, and no silent wait --------------------------------

class _Pending:
    """A fake rank future: done once ``value`` or ``error`` is set."""

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.is_done = False

    def finish(self, value=None, error: BaseException | None = None) -> None:
        self.value, self.error, self.is_done = value, error, True

    def done(self) -> bool:
        return self.is_done

    def result(self):
        assert self.is_done
        if self.error is not None:
            raise self.error
        return self.value


def _group_future(futures, stopped: list, skew: float = 30.0, timeout: float | None = None):
    import time

    from shoal.topologies.learners import GroupFuture

    def wait_one(fs, t):
        end = time.monotonic() + t
        while not any(f.done() for f in fs) and time.monotonic() < end:
            time.sleep(0.002)
        return [f for f in fs if f.done()]

    return GroupFuture(futures, [f"learner-{r}" for r in range(len(futures))], wait_one, lambda: stopped.append(1),
                       skew, timeout, what="learn")


def test_group_future_raises_a_later_ranks_error_as_itself_at_once_and_stops_the_group():
    import time

    stuck, failing = _Pending(), _Pending()  # rank 0 would wait for rank 1 in its next collective for ever
    error = ValueError("rank 1 broke")
    threading.Timer(0.05, lambda: failing.finish(error=error)).start()
    stopped: list = []
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="rank 1 broke") as info:
        _group_future([stuck, failing], stopped, skew=30.0, timeout=60.0).result()
    assert time.monotonic() - t0 < 5.0  # not the group's timeout
    assert info.value is error and any("learner rank 1" in note for note in info.value.__notes__)
    assert stopped == [1]


def test_group_future_waits_for_every_rank_and_bounds_how_far_they_drift_apart():
    import time

    from shoal.errors import ShoalError

    ranks = [_Pending(), _Pending()]
    threading.Timer(0.05, lambda: ranks[1].finish("one")).start()
    threading.Timer(0.2, lambda: ranks[0].finish("zero")).start()
    stopped: list = []
    assert _group_future(ranks, stopped).result() == "zero" and stopped == []  # rank 0's value, once both are done

    late = [_Pending(), _Pending()]
    late[0].finish("zero")
    t0 = time.monotonic()
    with pytest.raises(ShoalError, match="learner rank\\(s\\) learner-1 did not finish learn"):
        _group_future(late, stopped, skew=0.3).result()
    assert 0.3 <= time.monotonic() - t0 < 5.0 and stopped == [1]


@pytest.mark.timeout(60)
@pytest.mark.skipif(not torch.cuda.is_available() or not torch.distributed.is_nccl_available(), reason="needs CUDA and NCCL")
def test_nccl_reductions_take_cpu_tensors_and_return_them_on_the_cpu():
    c = Collective(0, Rendezvous("127.0.0.1", free_port("127.0.0.1"), 1, backend="nccl", timeout_s=30), "cuda:0")
    try:
        total = c.sum(torch.tensor(3.0, dtype=torch.float64))  # as IMPALA's ranks count their dropped unrolls
        assert total.device.type == "cpu" and float(total) == 3.0
        assert float(c.max(torch.tensor([2.0]))) == 2.0 and c.all_true(True)
    finally:
        c.close()
