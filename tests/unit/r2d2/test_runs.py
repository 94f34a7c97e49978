"""R2D2 through the real programs: the Ape-X topology with sequence items, and a run that resumes."""

from __future__ import annotations

import numpy as np
import pytest

import shoal
from shoal.agents.r2d2.config import ApexR2D2Config
from shoal.backends.inprocess import InProcessBackend
from shoal.config import to_dict
from shoal.envs import env_spec
from shoal.io.checkpoint import list_checkpoints, load_checkpoint
from shoal.settings import RunConfig
from shoal.topologies.apex import ApexProgram
from shoal.topologies.nodes import NodeContext

ENV = "shoal/CartPoleNoVel-v1"
SMALL = {"num_envs": 2, "burn_in": 4, "trace_length": 8, "sequence_period": 6, "batch_size": 8, "buffer_size": 500,
         "encoder": [16], "lstm_hidden": 16, "learning_starts": 300, "actor_update_period": 24,
         "batches_per_call": 2, "train_freq": 16}


def test_apex_topology_feeds_sequences_with_actor_priorities_at_the_replay_ratio():
    cfg = ApexR2D2Config(**{**SMALL, "encoder": (16,)})
    ctx = NodeContext("apex_r2d2", to_dict(cfg), ENV, env_spec(ENV), 4000, 0)
    p = ApexProgram(ctx, RunConfig(steps=4000, seed=0, num_actors=3), InProcessBackend())
    try:
        eps = [a.node.actor.epsilon for a in p.actors]
        assert eps == pytest.approx([0.4 ** (1 + 7 * i / 2) for i in range(3)])
        done = 0
        while done < 2400:
            done += p.run_iteration().env_steps
        replay = p.replay.node
        table = replay.table
        items = table.storage.read(table.index.live_slots())
        assert items["obs"].shape[1:] == (12, 2) and items["lstm_h"].shape[1:] == (1, 16)
        leaves = table.selector.tree.get(table.index.live_slots())
        assert np.ptp(leaves) > 0 and not np.allclose(leaves, 1.0)  # the actors' priorities reached the sum tree
        spi, min_size = p.builder.replay_rate
        assert spi == pytest.approx(8 * 1 * 6 / 16) and min_size == 300 // 6
        # at most one sequence per 6 env steps plus the padded windows flushed at episode ends; fewer in
        # episodes this short, whose last windows end within their burn-in and are dropped
        assert 2400 / 6 / 2 <= replay.inserted <= 2400 / 6 * 2
        limiter = table.rate_limiter
        lag = spi * replay.inserted - replay.sampled
        assert limiter.min_diff - p.batches_per_call * p.batch_size <= lag <= limiter.max_diff
        assert replay.sampled == p.learner_steps * 8 > 0
    finally:
        p.close()


def test_r2d2_run_resumes_with_its_learner_and_sequence_replay(tmp_path, crash_after_checkpoint):
    ovr = {**SMALL, "checkpoint_every": 1024, "eval_episodes": 2, "keep_checkpoints": 10}
    full = shoal.train("r2d2", ENV, steps=2048, seed=3, run_dir=tmp_path / "full", quiet=True, tensorboard=False,
                       overrides=ovr)
    part = tmp_path / "part"
    crash_after_checkpoint(1024)
    with pytest.raises(RuntimeError, match="simulated crash"):
        shoal.train("r2d2", ENV, steps=2048, seed=3, run_dir=part, quiet=True, tensorboard=False, overrides=ovr)
    mid, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    table = mid["program"]["learner_node"]["tables"]["replay"]
    assert table["index"]["size"] > 100
    assert mid["program"]["learner"]["steps"] == mid["program"]["learner_node"]["learner_steps"] > 0
    resumed = shoal.train(resume=part, quiet=True, tensorboard=False)
    assert resumed.env_steps == full.env_steps == 2048
    a, _ = load_checkpoint(list_checkpoints(full.run_dir / "checkpoints")[-1])
    b, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    la, lb = a["program"]["learner"], b["program"]["learner"]
    assert la["steps"] == lb["steps"] and set(lb) >= {"networks", "target_networks", "optimizer", "steps"}
    ta, tb = (t["program"]["learner_node"]["tables"]["replay"] for t in (a, b))
    # the resumed table holds the pre-crash sequences plus the new ones: about as many as the uninterrupted run's
    assert tb["index"]["size"] + tb["num_evicted"] >= 0.8 * (ta["index"]["size"] + ta["num_evicted"])
    assert resumed.eval is not None and np.isfinite(resumed.eval["mean_return"])
