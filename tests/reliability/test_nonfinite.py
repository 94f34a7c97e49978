"""NaN and inf: every learner skips (and counts) an update whose batch, loss or gradient is not finite, leaving
its parameters and optimiser state exactly as they were; with on_nonfinite=stop the run stops with one line
naming the update and the source. An env that returns a NaN is made anew (skip) or stops the run (stop)."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import shoal
from shoal.agents import registry
from shoal.config import build, to_dict
from shoal.core.distributed import Collective
from shoal.core.nonfinite import SKIPPED_METRIC, NonFiniteError, NonFiniteGuard, guards_of
from shoal.envs import env_spec
from shoal.errors import EnvError
from shoal.topologies.nodes import ActorNode, LearnerNode, NodeContext
from tests.unit.test_allreduce import _on_ranks  # one gloo group of threads, shared with the all-reduce tests

#: Small settings, each applied where the algorithm's config has the field.
SMALL = {"num_envs": 2, "rollout_length": 8, "hidden": (16, 16), "batch_size": 8,
         "buffer_size": 2000, "learning_starts": 0, "random_warmup": False, "train_freq": 1, "gradient_steps": 1,
         "epochs": 2, "minibatch_size": 8, "episodes_per_update": 1, "burn_in": 2, "trace_length": 6,
         "sequence_period": 3, "lstm_hidden": 16, "planning_steps": 2}


def _env_for(algo: str) -> str:
    module = registry.get(algo).builder
    if ".tabular." in module or ".hdqn." in module:  # Discrete observations (h-DQN: every state a goal)
        return "FrozenLake-v1"
    if ".continuous." in module:
        return "Pendulum-v1"
    return "CartPole-v1"


def _ctx(algo: str, policy: str = "skip") -> NodeContext:
    spec = registry.get(algo)
    env = _env_for(algo)
    names = {f.name for f in dataclasses.fields(spec.config_cls())}
    small = {**SMALL, **({"epochs": 1, "minibatch_size": 0} if algo in ("a3c", "dppo") else {})}  # one gradient each
    values = {k: v for k, v in {**spec.defaults(env), **small}.items() if k in names}
    return NodeContext(algo, to_dict(build(spec.config_cls(), values)), env, env_spec(env), 10_000, 0,
                       on_nonfinite=policy)


def _float_tensors(tree: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every floating tensor of a state tree (parameters, buffers, optimiser moments), by path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point():
            out[prefix] = tree.detach().clone()
    elif isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_float_tensors(v, f"{prefix}/{k}"))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(_float_tensors(v, f"{prefix}/{i}"))
    return out


_REWARD_KEYS = ("reward", "rewards", "r")
_OBS_KEYS = ("obs", "next_obs")


def _poison(data: Any, keys: tuple[str, ...], value: float) -> int:
    """Overwrite every float field named in ``keys`` (in dicts, dataclasses and lists) with ``value``; how many."""
    n = 0
    if isinstance(data, list):
        return sum(_poison(d, keys, value) for d in data)
    if isinstance(data, dict):
        items = list(data.items())
        setter = data.__setitem__
    elif dataclasses.is_dataclass(data):
        items = [(f.name, getattr(data, f.name)) for f in dataclasses.fields(data)]
        setter = lambda k, v: setattr(data, k, v)  # noqa: E731
    else:
        return 0
    for k, v in items:
        if k in keys and isinstance(v, (np.ndarray, torch.Tensor)) and v.dtype in (np.float32, np.float64,
                                                                                     torch.float32, torch.float64):
            w = v.clone() if isinstance(v, torch.Tensor) else np.array(v, copy=True)
            w[...] = value
            setter(k, w)
            n += 1
        elif isinstance(v, (dict, list)) or dataclasses.is_dataclass(v):
            n += _poison(v, keys, value)
    return n


def _collect(node: ActorNode, learner: LearnerNode, need: int) -> Any:
    """Actor data for one learner step: on-policy payloads as they come, replay data until a batch can be drawn."""
    data: list[Any] = []
    for _ in range(200):
        _, d = node.run(8)
        if d is not None and (not isinstance(d, list) or d):
            data.append(d)
        if not learner.tables and data and len(data) >= need:
            return data
        if learner.tables:
            enough = sum(len(next(iter(x.values()))) if isinstance(x, dict) else len(x) for x in data)
            if enough >= 4 * max(8, learner.builder.replay_batch_size):
                return data
    raise AssertionError("the actor produced no data to learn from")


def _learn_once(learner: LearnerNode, data: list[Any]) -> Any:
    """One learner update on ``data``: straight in for on-policy learners, through the replay table otherwise."""
    if learner.tables:
        table = next(iter(learner.tables.values()))
        for items in data:
            items = dict(items) if isinstance(items, dict) else items
            priorities = items.pop("priority", None) if isinstance(items, dict) else None
            table.insert(items, priorities)
        return learner.learner.step(None)
    payload = data if len(data) > 1 else data[0]
    return learner.learner.step(payload)


# pref_sac and pref_ppo learn from the reward model's rewards: an env reward never reaches their RL update
# (its non-finite case is tested in tests/unit/test_preference_wiring.py).
#: Every registered algorithm that learns from actors' rewards. AlphaZero's self-play learner is tested on its
#: own below; offline algorithms learn from a dataset file; preference-based ones (pref_*) train on a learned
#: reward, so an env's NaN reward never reaches their update (their reward model's guard counts it).
LEARNING_ALGOS = [a for a, spec in registry.ALGORITHMS.items()
                  if spec.topology != "alphazero" and spec.topology != "offline"
                  and not a.startswith("pref_")]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("algo", LEARNING_ALGOS)
def test_a_nonfinite_reward_batch_is_skipped_and_counted_leaving_every_parameter_as_it_was(algo, value):
    ctx = _ctx(algo)
    learner = LearnerNode(ctx)
    node = ActorNode(ctx, 0, 1, env_seed=1, actor_seed=2)
    try:
        data = _collect(node, learner, need=4 if algo == "reinforce" else 1)
        assert _poison(data, _REWARD_KEYS, value) > 0
        before = _float_tensors(learner.learner.state())
        metrics = {}
        for _ in range(3):
            m = _learn_once(learner, data)
            metrics = {**metrics, **{k: float(v) for k, v in m.items()}}
        after = _float_tensors(learner.learner.state())
    finally:
        node.close()
    assert before.keys() == after.keys() and before
    for k in before:
        assert torch.isfinite(after[k]).all(), f"{algo}: {k} became non-finite"
        assert torch.equal(before[k], after[k]), f"{algo}: {k} moved in a skipped update"
    counted = [v for k, v in metrics.items() if k.endswith(SKIPPED_METRIC)]  # a learner of learners: one per level
    assert counted and sum(counted) >= 1, metrics
    guards = guards_of(learner.learner)
    assert guards and sum(g.skipped for g in guards) >= 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("algo", LEARNING_ALGOS)
def test_with_stop_a_nonfinite_batch_stops_with_an_error_naming_the_update_and_the_reward(algo):
    ctx = _ctx(algo, policy="stop")
    learner = LearnerNode(ctx)
    node = ActorNode(ctx, 0, 1, env_seed=1, actor_seed=2)
    try:
        data = _collect(node, learner, need=4 if algo == "reinforce" else 1)
        _poison(data, _REWARD_KEYS, float("nan"))
        with pytest.raises(NonFiniteError, match=r"^learner: update \d+ has a non-finite (reward in the batch|return "
                                                 r"\(discounted rewards\) in the batch|TD target \(reward nan\)) "):
            for _ in range(3):
                _learn_once(learner, data)
    finally:
        node.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("algo", ["ppo", "impala", "dqn", "r2d2", "ddpg", "sac"])
def test_with_stop_a_nonfinite_observation_is_named(algo):
    ctx = _ctx(algo, policy="stop")
    learner = LearnerNode(ctx)
    node = ActorNode(ctx, 0, 1, env_seed=1, actor_seed=2)
    try:
        data = _collect(node, learner, need=1)
        assert _poison(data, _OBS_KEYS, float("inf")) > 0
        with pytest.raises(NonFiniteError, match=r"update \d+ has a non-finite (next )?observation in the batch"):
            for _ in range(3):
                _learn_once(learner, data)
    finally:
        node.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("algo,group", [("ppo", "pi"), ("dqn", None), ("td3", "critic"), ("reinforce", None)])
def test_a_nonfinite_gradient_is_skipped_and_named_by_its_parameter_group(algo, group):
    """Clean data, a NaN injected into one parameter's gradient (a backward hook): skipped, and stop names the group."""
    for policy in ("skip", "stop"):
        ctx = _ctx(algo, policy=policy)
        learner = LearnerNode(ctx)
        node = ActorNode(ctx, 0, 1, env_seed=1, actor_seed=2)
        try:
            data = _collect(node, learner, need=4 if algo == "reinforce" else 1)
            net = learner.learner.net
            names = [n for n, p in net.named_parameters() if p.requires_grad]
            name = next(n for n in names if group is None or n.startswith(group))
            param = dict(net.named_parameters())[name]
            param.register_hook(lambda g: torch.full_like(g, float("nan")))
            before = _float_tensors(learner.learner.state())
            if policy == "stop":
                with pytest.raises(NonFiniteError, match=rf"has a non-finite gradient of {name.split('.')[0]} "):
                    for _ in range(3):
                        _learn_once(learner, data)
                continue
            for _ in range(3):
                _learn_once(learner, data)
            after = _float_tensors(learner.learner.state())
        finally:
            node.close()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert learner.learner.guard.skipped >= 1


@pytest.mark.parametrize("algo", ["a3c", "dppo", "gorila"])
def test_a_nonfinite_gradient_received_as_a_value_is_dropped(algo):
    """A3C's and DPPO's parameter nodes and GORILA's learners apply gradients computed elsewhere."""
    ctx = _ctx(algo)
    learner = LearnerNode(ctx).learner
    before = _float_tensors(learner.state())
    n = sum(p.numel() for p in learner.net.parameters())
    grad = torch.ones(n)
    grad[n // 2] = float("nan")
    m = learner.apply_gradients(grad, env_steps=16)
    assert m[SKIPPED_METRIC] == 1.0
    after = _float_tensors(learner.state())
    assert all(torch.equal(before[k], after[k]) for k in before)
    learner.guard.policy = "stop"
    grad[n // 2] = float("inf")
    with pytest.raises(NonFiniteError, match=r"update 2 has a non-finite gradient received"):
        learner.apply_gradients(grad)


def test_the_parameter_server_drops_a_nonfinite_gradient_slice():
    from shoal.services.parameter_server import OUTLIER, ParameterShard, ShardConfig

    shard = ParameterShard(0, np.zeros(4, np.float32), ShardConfig())
    outcome, version = shard.push(np.array([1.0, np.nan, 0.0, 0.0], np.float32), 0, loss=1.0)
    assert (outcome, version) == (OUTLIER, 0)
    assert np.isfinite(shard.values()[1]).all() and shard.metrics()["dropped_nonfinite"] == 1.0
    assert shard.push(np.ones(4, np.float32), 0, loss=1.0)[0] != OUTLIER


def test_alphazero_skips_a_nonfinite_value_target_and_keeps_its_batch_norm_statistics():
    spec = registry.get("alphazero")
    cfg = build(spec.config_cls(), {"batch_size": 8, "min_replay": 8, "channels": 8, "blocks": 1})
    builder = spec.builder_cls()(cfg, "tictactoe", total_steps=100, seed=0)
    for policy in ("skip", "stop"):
        learner = builder.make_learner(builder.make_networks(), 0)
        learner.guard.policy = policy
        g = builder.game_cls
        rng = np.random.default_rng(0)
        items = {"planes": rng.random((16, g.num_planes, g.rows, g.cols), dtype=np.float32),
                 "pi": np.full((16, g.num_actions), 1.0 / g.num_actions, np.float32),
                 "z": np.full(16, np.nan, np.float32)}
        learner.insert(items, 16)
        before = _float_tensors(learner.state())
        if policy == "stop":
            with pytest.raises(NonFiniteError, match=r"update 1 has a non-finite value target in the batch"):
                learner.step()
            continue
        m = learner.step()
        after = _float_tensors(learner.state())
        assert m == {SKIPPED_METRIC: 1.0}
        assert all(torch.equal(before[k], after[k]) for k in before if "replay" not in k)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("algo", ["dqn", "ppo"])
def test_a_nan_on_one_rank_of_a_learner_group_makes_every_rank_skip_the_same_update(algo):
    ctx = _ctx(algo)
    seed_learner = LearnerNode(ctx)
    node = ActorNode(ctx, 0, 1, env_seed=1, actor_seed=2)
    try:
        clean = _collect(node, seed_learner, need=1)
    finally:
        node.close()
    if algo == "dqn":
        table = next(iter(seed_learner.tables.values()))
        for items in clean:
            table.insert(items)
        batch = table.sample(8)[0]

    def fn(c: Collective) -> tuple[int, bool]:
        learner: Any = LearnerNode(ctx).learner
        learner.collective = c
        before = _float_tensors(learner.state())
        if algo == "dqn":
            items = {k: np.array(v, copy=True) for k, v in batch.items()}
            if c.rank == 1:
                items["reward"][3] = np.nan
            learner.update(items)
        else:
            import copy

            data = copy.deepcopy(clean[0])
            if c.rank == 1:
                data.rewards[2, 0] = np.nan
            learner.step(data)
        after = _float_tensors(learner.state())
        return learner.guard.skipped, all(torch.equal(before[k], after[k]) for k in before)

    (skipped0, same0), (skipped1, same1) = _on_ranks(2, fn)
    assert skipped0 == skipped1 >= 1  # the clean rank skipped too
    assert same0 and same1


def test_the_guard_checks_losses_and_gradients_with_one_verdict():
    lin = torch.nn.Linear(2, 1)
    guard = NonFiniteGuard()
    lin(torch.ones(1, 2)).sum().backward()
    assert guard.check(torch.tensor(1.0), {"lin": list(lin.parameters())})
    assert not guard.check(torch.tensor(float("nan")), {"lin": list(lin.parameters())})
    assert guard.skipped == 1 and guard.updates == 2
    assert all(float(p.grad.abs().sum()) == 0.0 for p in lin.parameters())  # a skipped update's gradients are dropped
    lin.weight.grad = torch.tensor([[float("inf"), 0.0]])
    guard.policy = "stop"
    with pytest.raises(NonFiniteError, match=r"^learner: update 3 has a non-finite gradient of lin \(NaN or inf\)"):
        guard.check(torch.tensor(0.5), {"lin": list(lin.parameters())})


# -- the env side, end to end ---------------------------------------------------------------------------------

class _NaNOnce:
    """Counts steps over every env copy; the reward at step ``at`` is NaN."""

    def __init__(self, at: int) -> None:
        self.at, self.steps, self.emitted = at, 0, 0
        self.lock = threading.Lock()

    def reward(self, r: float) -> float:
        with self.lock:
            self.steps += 1
            if self.steps == self.at:
                self.emitted += 1
                return float("nan")
            return r


class NaNRewardCartPole(gym.Wrapper):
    def __init__(self, fault: _NaNOnce) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.fault = fault

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        return obs, self.fault.reward(float(r)), term, trunc, info


def _nan_env(fault: _NaNOnce):
    def make():
        return NaNRewardCartPole(fault)

    make.__name__ = "NaNRewardCartPole"
    return make


@pytest.mark.timeout(120)
def test_an_env_emitting_one_nan_reward_mid_run_is_made_anew_by_default_and_the_run_finishes(tmp_path):
    fault = _NaNOnce(at=700)
    r = shoal.train("ppo", _nan_env(fault), steps=2048, seed=0, run_dir=tmp_path / "run", quiet=True,
                    tensorboard=False, overrides={"eval_episodes": 0, "num_envs": 2, "rollout_length": 64})
    assert fault.emitted == 1
    assert r.env_steps >= 2048
    assert r.history[-1]["env_restarts"] == 1.0
    assert r.history[-1][SKIPPED_METRIC] == 0.0  # the NaN never reached the learner
    assert all(np.isfinite(v) for v in r.history[-1].values() if isinstance(v, float) and v == v)


@pytest.mark.timeout(120)
def test_with_stop_an_env_emitting_a_nan_reward_stops_the_run_naming_the_step_and_the_reward(tmp_path):
    fault = _NaNOnce(at=700)
    with pytest.raises(EnvError, match=r"^actor 0, step 350: env 'NaNRewardCartPole' returned a non-finite reward "
                                       r"nan; .*on_nonfinite=stop"):
        shoal.train("ppo", _nan_env(fault), steps=2048, seed=0, run_dir=tmp_path / "run", quiet=True,
                    tensorboard=False, overrides={"eval_episodes": 0, "num_envs": 2, "rollout_length": 64,
                                                  "on_nonfinite": "stop"})


def test_a_learner_call_averages_each_metric_over_the_updates_that_were_not_skipped():
    """A skipped update reports only its count: the call's loss is the mean over the updates that made one."""

    class Builder:
        def learner_steps_due(self, env_steps: int, done: int) -> int:
            return 4

    class Learner:
        n = 0

        def step(self, payload: Any) -> dict[str, float]:
            self.n += 1
            return {SKIPPED_METRIC: 1.0} if self.n == 2 else {"loss": 2.0 * self.n, SKIPPED_METRIC: float(self.n > 2)}

    node = LearnerNode.__new__(LearnerNode)
    node.builder, node.tables, node.learner, node.learner_steps = Builder(), {}, Learner(), 0
    assert node.learn(0, "rollout") == {"loss": (2.0 + 6.0 + 8.0) / 3, SKIPPED_METRIC: 1.0}
    assert node.learner_steps == 4


def test_a_queue_learner_reports_skipped_updates_as_a_count_and_means_over_the_others(monkeypatch):
    """IMPALA's (and SEED's) learner node: the count is the newest, not a mean over the call's batches."""
    import types

    from shoal.topologies import impala

    class Learner:
        version, n = 0, 0

        def step(self, rollouts: Any) -> dict[str, float]:
            self.n += 1
            return {SKIPPED_METRIC: 1.0} if self.n == 1 else {"loss": 3.0, SKIPPED_METRIC: 1.0}

    monkeypatch.setattr(impala, "Rollout", types.SimpleNamespace(
        from_items=lambda items: [types.SimpleNamespace(policy_version=0, num_steps=4)]))
    node = impala.QueueLearnerNode.__new__(impala.QueueLearnerNode)
    node.learner, node._lock, node.max_policy_lag = Learner(), threading.RLock(), 1
    node.learner_steps = node.learner_env_steps = node.dropped = 0
    node._next_batch = lambda timeout: {}
    m = node.train(4, timeout=1.0)
    assert m["loss"] == 3.0 and m[SKIPPED_METRIC] == 1.0 and m["learner_batches"] == 4.0


@pytest.mark.timeout(60)
def test_a_ppo_update_judges_its_rollout_once_not_once_per_minibatch(monkeypatch):
    """The guard's input scan is one pass over the rollout per update; each minibatch adds only its loss and gradients."""
    ctx = _ctx("ppo")
    learner = LearnerNode(ctx)
    node = ActorNode(ctx, 0, 1, env_seed=1, actor_seed=2)
    try:
        rollout = _collect(node, learner, need=1)[0]
    finally:
        node.close()
    obs_size = rollout.obs.size
    scans = []
    isfinite = torch.isfinite

    def counting(t: torch.Tensor) -> torch.Tensor:
        if t.numel() >= obs_size:  # a test that holds the rollout's observations (with its other fields, maybe)
            scans.append(t.shape)
        return isfinite(t)

    monkeypatch.setattr(torch, "isfinite", counting)
    cfg = learner.learner.cfg
    m = learner.learner.step(rollout)
    assert cfg.epochs * (rollout.rewards.size // cfg.minibatch_size) >= 2 and m[SKIPPED_METRIC] == 0.0
    assert len(scans) == 1


@pytest.mark.timeout(60)
def test_a3c_and_dppo_parameter_nodes_skip_a_nonfinite_gradient_and_go_on():
    """The nodes that apply pushed gradients: a skipped update publishes no version (the same one again would be
    refused) and releases a DPPO worker waiting on its round at once; the next finite gradient makes version 1."""
    import time

    from shoal.topologies.a3c import A3CSettings, ParameterNode
    from shoal.topologies.dppo import ChiefNode, DPPOSettings

    node = ParameterNode(_ctx("a3c"), A3CSettings())
    n = sum(p.numel() for p in node.learner.net.parameters())
    bad, good = np.ones(n, np.float32), np.full(n, 0.01, np.float32)
    bad[n // 2] = np.nan
    before = _float_tensors(node.learner.state())
    assert node.push(bad, 0, 16)[SKIPPED_METRIC] == 1.0
    assert all(torch.equal(before[k], v) for k, v in _float_tensors(node.learner.state()).items())
    assert node.pull(-1)[0] == 0
    node.push(good, 0, 16)
    assert node.pull(0)[0] == 1

    chief = ChiefNode(_ctx("dppo"), 2, DPPOSettings(min_gradients=2, round_timeout_s=20.0))
    with ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        waiting = pool.submit(chief.push, good, 0, 0, 16, True)  # worker 0 waits for its round to close
        for _ in range(500):
            if chief.round:
                break
            time.sleep(0.01)
        assert chief.push(bad, 0, 1, 16)["version"] == 0.0  # worker 1's NaN closes the round: skipped
        assert waiting.result(timeout=30)["version"] == 0.0
        assert time.monotonic() - t0 < 5.0  # released by the closed round, not by round_timeout_s
    assert chief.learner.guard.skipped == 1 and chief.rounds == 1
    chief.push(good, 0, 0, 16)
    chief.push(good, 0, 1, 16)
    assert chief.version == 1 and chief.pull(0)[0] == 1


def test_the_apex_learner_node_reports_skipped_updates_as_a_count_and_means_over_the_others():
    import types

    from shoal.topologies.apex import ApexLearnerNode

    done = types.SimpleNamespace(result=lambda: None)
    calls = iter([[object()], [object()], []])
    replay = types.SimpleNamespace(call=lambda method, *a: types.SimpleNamespace(
        result=lambda: next(calls)) if method == "sample" else done)

    class Feed:
        pending = 0

        def feed(self, batches: list) -> None:
            self.pending = 2

        def take_priorities(self) -> None:
            return None

    class Learner:
        n = 0

        def step(self) -> dict[str, float]:
            self.n += 1
            feed.pending -= 1
            return {SKIPPED_METRIC: 1.0} if self.n == 2 else {"loss": 4.0, SKIPPED_METRIC: float(self.n > 2)}

        def get_variables(self) -> tuple[int, dict]:
            return 0, {}

    feed = Feed()
    node = ApexLearnerNode.__new__(ApexLearnerNode)
    node.replay, node.feed, node.learner, node._priorities = replay, feed, Learner(), None
    node.publisher = types.SimpleNamespace(publish=lambda *a, **k: None)
    node.batches_per_call, node.batch_size, node.learner_steps = 1, 8, 0
    m = node.train(None, timeout=1.0)
    assert m["loss"] == 4.0 and m[SKIPPED_METRIC] == 1.0 and m["learner_steps"] == 2.0


def test_alphazero_follows_the_runs_on_nonfinite_setting(tmp_path):
    """AlphaZero builds its learner outside NodeContext: on_nonfinite=stop still reaches its guard."""
    from shoal.backends.inprocess import InProcessBackend
    from shoal.config import to_dict
    from shoal.services.variables import VariableServer
    from shoal.topologies.alphazero import GameContext
    from shoal.topologies.alphazero import LearnerNode as GameLearnerNode

    spec = registry.get("alphazero")
    cfg = build(spec.config_cls(), {"batch_size": 8, "min_replay": 8, "channels": 8, "blocks": 1})
    backend = InProcessBackend()
    try:
        for policy in ("skip", "stop"):
            node = GameLearnerNode(GameContext(to_dict(cfg), "tictactoe", 0, on_nonfinite=policy),
                                   backend.spawn(VariableServer))
            assert node.learner.guard.policy == policy
    finally:
        backend.shutdown()
    with pytest.raises(NonFiniteError, match="update 1 has a non-finite value target"):
        g = node.builder.game_cls
        rng = np.random.default_rng(0)
        node.learner.insert({"planes": rng.random((16, g.num_planes, g.rows, g.cols), dtype=np.float32),
                             "pi": np.full((16, g.num_actions), 1.0 / g.num_actions, np.float32),
                             "z": np.full(16, np.nan, np.float32)}, 16)
        node.learner.step()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_the_recurrent_ppo_learner_skips_a_nonfinite_reward_rollout_leaving_every_parameter_as_it_was(value):
    """recurrent=true trains with a learner of its own (sequences, an LSTM): the same guard, the same claim."""
    spec = registry.get("ppo")
    values = {**SMALL, "recurrent": True, "lstm_hidden": 8, "hidden": (8,), "rollout_length": 8, "sequence_length": 4,
              "minibatch_size": 8}
    names = {f.name for f in dataclasses.fields(spec.config_cls())}
    ctx = NodeContext("ppo", to_dict(build(spec.config_cls(), {k: v for k, v in values.items() if k in names})),
                      "CartPole-v1", env_spec("CartPole-v1"), 10_000, 0)
    learner = LearnerNode(ctx)
    assert type(learner.learner).__name__ == "RecurrentActorCriticLearner"
    node = ActorNode(ctx, 0, 1, env_seed=1, actor_seed=2)
    try:
        data = _collect(node, learner, need=1)
    finally:
        node.close()
    assert _poison(data, _REWARD_KEYS, value) > 0
    before = _float_tensors(learner.learner.state())
    m = learner.learner.step(data[0])
    after = _float_tensors(learner.learner.state())
    assert m[SKIPPED_METRIC] >= 1 and learner.learner.version == 0
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def _alphazero_learner() -> Any:
    spec = registry.get("alphazero")
    cfg = build(spec.config_cls(), {"batch_size": 8, "min_replay": 8, "channels": 8, "blocks": 1})
    builder = spec.builder_cls()(cfg, "tictactoe", total_steps=100, seed=0)
    return builder.make_learner(builder.make_networks(), 0)


def _make_learner(algo: str) -> Any:
    return _alphazero_learner() if algo == "alphazero" else LearnerNode(_ctx(algo)).learner


@pytest.mark.timeout(60)
@pytest.mark.parametrize("algo", LEARNING_ALGOS + ["pref_sac", "pref_ppo", "alphazero"])
def test_every_learners_skipped_update_counts_survive_a_checkpoint_and_resume(tmp_path, algo):
    """``nonfinite_updates`` goes on from where it was after a resume: every guard's counters travel in the
    learner's state, through the checkpoint's JSON (no pickle), into a new learner."""
    from shoal.io.checkpoint import load_checkpoint, save_checkpoint

    learner = _make_learner(algo)
    guards = guards_of(learner)
    assert guards
    for i, g in enumerate(guards):
        g.skipped, g.updates = 3 + i, 10 + i
    tree, _ = load_checkpoint(save_checkpoint(tmp_path / "ckpt", {"learner": learner.state()}))
    resumed = _make_learner(algo)
    resumed.load_state(tree["learner"])
    assert [(g.skipped, g.updates) for g in guards_of(resumed)] == [(3 + i, 10 + i) for i in range(len(guards))]
    assert guards_of(resumed)[0].metrics() == {SKIPPED_METRIC: 3.0}


@pytest.mark.timeout(60)
def test_a_checkpoint_saved_without_the_guard_counters_loads_with_them_at_zero(tmp_path):
    """Checkpoints from before the counters were saved still load: the counters start at 0."""
    from shoal.core.nonfinite import STATE_KEY
    from shoal.io.checkpoint import load_checkpoint, save_checkpoint

    learner = LearnerNode(_ctx("dqn")).learner
    learner.guard.skipped = 5
    old = {k: v for k, v in learner.state().items() if k != STATE_KEY}
    tree, _ = load_checkpoint(save_checkpoint(tmp_path / "old", {"learner": old}))
    resumed = LearnerNode(_ctx("dqn")).learner
    resumed.load_state(tree["learner"])
    assert resumed.guard.skipped == 0 and resumed.guard.metrics() == {SKIPPED_METRIC: 0.0}


def test_a_learner_that_extends_another_restores_the_counters_its_checkpoint_holds():
    """The counters are one mechanism of :class:`Learner`: a subclass whose state and load_state call super's
    (Dyna-Q on the tabular learner) saves and restores them once, with the saved values winning."""
    from shoal.agents.tabular.config import DynaQConfig
    from shoal.agents.tabular.dyna import DynaQLearner
    from shoal.agents.tabular.networks import QTable

    def make() -> DynaQLearner:
        cfg = DynaQConfig()
        return DynaQLearner(QTable(4, 2, cfg.q_init), cfg, total_steps=100, seed=0)

    learner = make()
    learner.step(_tabular_batch(reward=float("nan")))  # one transition, skipped
    assert learner.guard.skipped == 1
    resumed = make()
    resumed.load_state(learner.state())
    m = resumed.step(_tabular_batch(reward=float("nan")))
    assert resumed.guard.skipped == 2 and m == {SKIPPED_METRIC: 2.0}


def _tabular_batch(reward: float, n: int = 1) -> dict[str, np.ndarray]:
    """``n`` transitions (state 0, action 0) -> state 1 with ``reward``, as the tabular actor hands them over."""
    zeros = np.zeros((n, 1), np.int64)
    return {"s": zeros, "a": zeros, "r": np.full((n, 1), reward), "s2": zeros + 1, "a2": zeros,
            "terminated": np.zeros((n, 1), bool), "truncated": np.zeros((n, 1), bool), "first": np.zeros((n, 1), bool)}


@pytest.mark.parametrize("algo", ["q_learning", "sarsa", "sarsa_lambda", "dyna_q"])
def test_a_tabular_step_whose_transitions_were_all_skipped_keeps_its_parameter_version(algo):
    learner = LearnerNode(_ctx(algo)).learner
    q = learner.q.copy()
    m = learner.step([_tabular_batch(float("nan"), 3), _tabular_batch(float("inf"), 2)])
    assert learner.version == 0 and np.array_equal(learner.q, q)
    assert m == {SKIPPED_METRIC: 5.0}  # a skipped update reports the count only
    assert learner.env_steps == 5  # the transitions happened: the schedules' clock moves
    m = learner.step([_tabular_batch(float("nan"), 1), _tabular_batch(1.0, 1)])
    assert learner.version == 1 and m[SKIPPED_METRIC] == 6.0 and m["td_error_abs"] > 0


def test_the_guard_judges_each_value_in_its_own_width_and_misses_no_nan_among_mixed_dtypes():
    """Losses, gradients and inputs are tested together, joined in their widest dtype: a finite float64 input
    beyond float32's range is not taken for an inf, and a NaN in a half-precision field is still found."""
    import torch

    from shoal.core.nonfinite import NonFiniteGuard

    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    loss = torch.tensor(0.5)
    guard = NonFiniteGuard()
    assert guard.check(loss, {"net": [p]}, {"obs": torch.tensor([1e39, 2.0], dtype=torch.float64)})
    half = torch.tensor([1.0, float("nan")], dtype=torch.float16)
    assert not guard.check(loss, {"net": [p]}, {"obs": torch.ones(2, dtype=torch.bfloat16), "reward": half})
    assert guard.skipped == 1 and guard.last_skipped
    assert guard.check(torch.tensor(1.0, dtype=torch.float64), {}, {"empty": torch.zeros(0)})
    images = torch.zeros(4, 3, 96, 96)  # a field too large to join with the others: tested on its own
    assert guard.check(loss, {}, {"obs": images, "reward": torch.ones(4)})
    images[2, 1, 50, 7] = float("inf")
    assert not guard.check(loss, {}, {"obs": images, "reward": torch.ones(4)})
