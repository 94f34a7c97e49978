"""GA3C: agents without networks, a batching predictor with its own lagging copy, a batching trainer."""

import time

import pytest
import torch

import shoal
from shoal.backends.inprocess import InProcessBackend
from shoal.backends.threaded import ThreadedBackend
from shoal.settings import RunConfig
from shoal.topologies.ga3c import AgentNode, GA3CProgram, GA3CSettings


def _program(ctx, backend, n=4, **settings):
    return GA3CProgram(ctx, RunConfig(steps=20_000, num_actors=n), backend, GA3CSettings(**settings))


def test_agents_hold_no_network_and_training_consumes_their_rollouts(small_ctx):
    prog = _program(small_ctx("ga3c"), InProcessBackend(), n=2)
    try:
        agents = [n for n in prog.backend.nodes if isinstance(n, AgentNode)]
        assert len(agents) == 2
        assert not any(isinstance(v, torch.nn.Module) for a in agents for v in vars(a).values())
        reports = [prog.run_iteration() for _ in range(4)]
        # a rollout goes on the queue when the observation after its last step is seen: one round later
        assert reports[-1].metrics["learner_env_steps"] == 3 * 2 * 16 * 4
    finally:
        prog.close()


def test_the_predictor_lags_the_trainer_and_batches_agents(small_ctx):
    prog = _program(small_ctx("ga3c"), ThreadedBackend(), n=8, steps_per_call=64, predictor_pull_every=8,
                    max_wait_s=0.005)
    prog.call_seconds = 0.25  # learner and metrics calls end often
    try:
        reports, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline and (len(reports) < 16 or not any("policy_lag" in r.metrics for r in reports)
                                               or not any("inference_requests_mean" in r.metrics for r in reports)):
            reports.append(prog.run_iteration())
        lags = [r.metrics["policy_lag"] for r in reports if "policy_lag" in r.metrics]
        assert lags and max(lags) > 0, lags  # rollouts predicted with an older version than the trainer's
        m = [r.metrics for r in reports if "inference_requests_mean" in r.metrics]  # reported about once a second
        assert m, "the predictor's metrics were never reported"
        assert m[-1]["inference_requests_mean"] >= 4, m[-1]  # 8 agents: a prediction batches several of them
        assert m[-1]["predictor_version"] >= 0
    finally:
        prog.close()


def test_ga3c_trains_through_the_api(tmp_path):
    r = shoal.train("ga3c", "CartPole-v1", steps=4_000, seed=0, run_dir=tmp_path / "run", num_actors=2, quiet=True,
                    tensorboard=False, overrides={"eval_episodes": 2, "num_envs": 4, "rollout_length": 16})
    assert (r.run_dir / "eval.json").exists()


# The slow set learns this with the same budget and bar in tests/reliability/test_killed_training.py, killed -9 and
# resumed, on a local backend and on Ray; the extended set runs these uninterrupted runs.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", [pytest.param("inprocess", marks=pytest.mark.extended),
                                     pytest.param("threaded", marks=pytest.mark.extended),
                                     pytest.param("ray", marks=[pytest.mark.extended, pytest.mark.ray])])
def test_ga3c_learns_cartpole(tmp_path, backend):
    r = shoal.train("ga3c", "CartPole-v1", steps=300_000, seed=0, run_dir=tmp_path / "run", num_actors=4,
                    backend=backend, quiet=True, tensorboard=False,
                    overrides={"eval_every": 20_000, "target_return": 475})
    assert r.eval["mean_return"] >= 400
