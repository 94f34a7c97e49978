"""IMPALA with two learner ranks without Ray: rank processes fed their B/L unrolls by the learner node."""

from __future__ import annotations

import pytest
import torch

import shoal
from shoal.backends.inprocess import InProcessBackend
from shoal.backends.threaded import ThreadedBackend
from shoal.errors import ConfigError
from shoal.io.checkpoint import list_checkpoints, load_checkpoint
from shoal.settings import RunConfig
from shoal.topologies.impala import ImpalaProgram, ImpalaSettings

UNROLL_STEPS = 4 * 16  # make_ctx: 4 env copies x 16 steps per unroll


def _program(ctx, backend, num_learners: int, batch_unrolls: int = 2, num_actors: int = 2) -> ImpalaProgram:
    return ImpalaProgram(ctx, RunConfig(num_actors=num_actors, num_learners=num_learners, steps=20_000), backend,
                         ImpalaSettings(batch_unrolls=batch_unrolls))


def _assert_identical(states: list[dict[str, torch.Tensor]]) -> None:
    for s in states[1:]:
        assert set(s) == set(states[0])
        for k in s:
            assert torch.equal(s[k], states[0][k]), f"rank parameters differ at {k}"


def _variables(program: ImpalaProgram) -> dict[str, torch.Tensor]:
    return program.backend.get(program.learner.call("get_variables"))[1]


@pytest.mark.timeout(120)
def test_two_ranks_without_ray_take_halves_stay_identical_and_step_like_one_learner(small_ctx):
    ctx = small_ctx()
    alone = _program(ctx, InProcessBackend(), num_learners=1, batch_unrolls=2)
    try:
        start = {k: v.clone() for k, v in _variables(alone).items()}
        for _ in range(3):
            alone.run_iteration()
        alone_state, alone_vars = alone.state(), _variables(alone)
    finally:
        alone.close()
    program = _program(ctx, InProcessBackend(), num_learners=2, batch_unrolls=2)
    try:
        metrics: dict[str, float] = {}
        for _ in range(3):
            metrics.update(program.run_iteration().metrics)
        each = program.learner.call("each", "get_variables").result()
        assert [v for v, _ in each] == [3, 3]  # one update per cooperative round (2 actors, B = 2)
        _assert_identical([s for _, s in each])
        # each rank computed on B/L = 1 unroll per update, the group on B = 2
        assert program.learner.call("each", "learned_share").result() == [{"unrolls": 3, "env_steps": 3 * UNROLL_STEPS}] * 2
        assert metrics["learner_env_steps"] == 3 * 2 * UNROLL_STEPS
        # what the actors pull is rank 0's newest version
        assert program.backend.get(program.variables.call("get_ref", -1))[0] == 3
        _assert_identical([_variables(program), each[0][1]])
        # the same data in the same order: two ranks on halves took one learner's steps on the whole batch
        for k in alone_vars:
            assert torch.allclose(alone_vars[k].double(), each[0][1][k].double(), rtol=1e-4, atol=1e-5), k
        assert any(not torch.equal(alone_vars[k], start[k]) for k in start), "the updates changed no parameter"
        # checkpoints: rank 0's state is the group's; a loaded state reaches every rank and is republished
        assert program.state()["learner"]["version"] == 3
        alone_state["learner"]["version"] = 7
        program.load_state(alone_state)
        each = program.learner.call("each", "get_variables").result()
        assert [v for v, _ in each] == [7, 7]
        _assert_identical([alone_vars] + [s for _, s in each])
        assert program.backend.get(program.variables.call("get_ref", -1))[0] == 7
    finally:
        program.close()


@pytest.mark.timeout(120)
def test_two_ranks_on_the_threaded_backend_run_concurrently_and_stay_identical(small_ctx):
    program = _program(small_ctx(), ThreadedBackend(call_timeout=60.0), num_learners=2, batch_unrolls=4, num_actors=2)
    try:
        learned = 0.0
        for _ in range(200):
            learned = max(learned, program.run_iteration().metrics.get("learner_env_steps", 0.0))
            if learned >= 3 * 4 * UNROLL_STEPS:
                break
        assert learned >= 3 * 4 * UNROLL_STEPS
        each = program.learner.call("each", "get_variables").result()
        assert each[0][0] == each[1][0] >= 3
        _assert_identical([s for _, s in each])
        shares = program.learner.call("each", "learned_share").result()
        assert shares[0] == shares[1] == {"unrolls": 2 * each[0][0], "env_steps": 2 * each[0][0] * UNROLL_STEPS}
    finally:
        program.close()


def test_a_batch_of_unrolls_that_does_not_split_is_refused(small_ctx):
    with pytest.raises(ConfigError, match="batch_unrolls=3 does not split into 2"):
        _program(small_ctx(), InProcessBackend(), num_learners=2, batch_unrolls=3)


@pytest.mark.timeout(120)
def test_impala_with_two_learners_trains_through_the_api_without_ray(tmp_path):
    r = shoal.train("impala", "CartPole-v1", steps=3_000, seed=0, run_dir=tmp_path / "run", num_actors=2, num_learners=2,
                    quiet=True, tensorboard=False, overrides={"eval_episodes": 2, "num_envs": 4, "rollout_length": 16})
    assert r.env_steps >= 3_000
    assert (r.run_dir / "eval.json").exists()
    tree, _ = load_checkpoint(list_checkpoints(r.run_dir / "checkpoints")[-1])
    assert tree["program"]["learner"]["version"] > 0
    assert "num_learners: 2" in (r.run_dir / "config.yaml").read_text()
