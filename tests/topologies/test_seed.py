"""The SEED topology: env workers without networks, batched inference and trajectories on the learner."""

import time

import numpy as np
import pytest
import torch

import shoal
from shoal.backends.inprocess import InProcessBackend
from shoal.backends.threaded import ThreadedBackend
from shoal.settings import RunConfig
from shoal.topologies.seed import EnvWorkerNode, SeedLearnerNode, SeedProgram, SeedSettings


def _program(ctx, backend, n=4, **settings):
    return SeedProgram(ctx, RunConfig(steps=20_000, num_actors=n), backend, SeedSettings(**settings))


def test_env_workers_hold_no_network(small_ctx):
    prog = _program(small_ctx(), InProcessBackend(), n=2)
    try:
        workers = [n for n in prog.backend.nodes if isinstance(n, EnvWorkerNode)]
        assert len(workers) == 2
        for w in workers:
            assert not any(isinstance(v, torch.nn.Module) for v in vars(w).values())
    finally:
        prog.close()


def test_server_side_unrolls_match_what_the_workers_did(small_ctx):
    prog = _program(small_ctx(), InProcessBackend(), n=2)
    try:
        reports = [prog.run_iteration() for _ in range(3)]
        node = next(n for n in prog.backend.nodes if isinstance(n, SeedLearnerNode))
        # An unroll is complete when the observation after its last step (its bootstrap) arrives,
        # with the worker's next request: after 3 rounds, the unrolls of the first 2 were trained on.
        assert sum(r.env_steps for r in reports) == 3 * 2 * 16 * 4
        assert node.learner_env_steps == 2 * 2 * 16 * 4
        assert node.trajectories[0].t == 16 and node.trajectories[1].t == 16
    finally:
        prog.close()


def test_server_side_unrolls_hold_exactly_what_the_worker_saw_and_did(small_ctx):
    prog = _program(small_ctx(), InProcessBackend(), n=1)
    try:
        worker = next(n for n in prog.backend.nodes if isinstance(n, EnvWorkerNode))
        node = next(n for n in prog.backend.nodes if isinstance(n, SeedLearnerNode))
        log, put = [], []
        real_step, real_put = worker.env.step, node.queue.put_timed

        def step(action):
            obs = worker.env.obs.copy()
            out = real_step(action)
            log.append((obs, np.array(action), out.reward.copy(), out.terminated.copy(), out.next_obs.copy()))
            return out

        worker.env.step = step
        node.queue.put_timed = lambda items, timeout=None: put.append(items) or real_put(items, timeout=timeout)
        for _ in range(2):
            prog.run_iteration()
        assert len(put) == 1  # the first unroll, complete once the second round's first request arrived
        item = {k: v[0] for k, v in put[0].items()}
        T = 16
        for t in range(T):
            obs, action, reward, terminated, _ = log[t]
            np.testing.assert_array_equal(item["obs"][t], obs)
            np.testing.assert_array_equal(item["actions"][t], action)
            np.testing.assert_array_equal(item["rewards"][t], reward)
            np.testing.assert_array_equal(item["terminated"][t], terminated)
        np.testing.assert_array_equal(item["last_obs"], log[T - 1][4])  # the bootstrap observation
    finally:
        prog.close()


def test_each_worker_explores_with_its_own_generator(small_ctx):
    prog = _program(small_ctx(), InProcessBackend(), n=2)
    try:
        node = next(n for n in prog.backend.nodes if isinstance(n, SeedLearnerNode))
        obs = np.zeros((64, 4), np.float32)
        a0 = node._policy(obs, np.zeros(64, np.int64))[0]
        a1 = node._policy(obs, np.ones(64, np.int64))[0]
        assert not np.array_equal(a0, a1)  # same model, same observations, different exploration
    finally:
        prog.close()


def test_threaded_seed_batches_many_workers_per_inference_call(small_ctx):
    prog = _program(small_ctx(), ThreadedBackend(), n=8, steps_per_call=64, max_wait_s=0.005)
    prog.call_seconds = 0.25  # learner calls (which carry the inference metrics) end often
    try:
        reports, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline and not any("inference_batch_mean" in r.metrics for r in reports[-4:]):
            reports.append(prog.run_iteration())
        m = [r.metrics for r in reports if "inference_batch_mean" in r.metrics]
        assert m, "the learner reported no inference metrics"
        # 8 workers x 4 envs: a call batches several workers' requests (one worker alone is 4)
        assert m[-1]["inference_requests_mean"] >= 4, m[-1]
        assert m[-1]["inference_batch_mean"] >= 16, m[-1]
    finally:
        prog.close()


def test_seed_trains_through_the_api(tmp_path):
    r = shoal.train("impala", "CartPole-v1", steps=4_000, seed=0, run_dir=tmp_path / "run", num_actors=2,
                    quiet=True, tensorboard=False,
                    overrides={"topology": "seed", "eval_episodes": 2, "num_envs": 4, "rollout_length": 16})
    assert (r.run_dir / "eval.json").exists()


# The slow set learns this with the same budget and bar in tests/reliability/test_killed_training.py, on a
# local backend and on Ray, killed -9 and resumed; the extended set runs these uninterrupted runs.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", [pytest.param("threaded", marks=pytest.mark.extended),
                                     pytest.param("inprocess", marks=pytest.mark.extended),
                                     pytest.param("ray", marks=[pytest.mark.extended, pytest.mark.ray])])
def test_seed_learns_cartpole(tmp_path, backend):
    r = shoal.train("impala", "CartPole-v1", steps=300_000, seed=0, run_dir=tmp_path / "run", num_actors=4,
                    backend=backend, quiet=True, tensorboard=False,
                    # measured: with a constant lr SEED's seed 0 collapses late (184 at 300k threaded); decaying it
                    # linearly, both backends reach 475 by 81k steps
                    overrides={"topology": "seed", "lr_schedule": "linear", "eval_every": 20_000, "target_return": 475})
    assert r.eval["mean_return"] >= 400
