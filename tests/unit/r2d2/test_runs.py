"""R2D2 through the real programs: the Ape-X topology with sequence items, and a run that resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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


def _apex(steps: int, num_actors: int = 3, **kw) -> ApexProgram:
    cfg = ApexR2D2Config(**{**SMALL, "encoder": (16,), **kw})
    ctx = NodeContext("apex_r2d2", to_dict(cfg), ENV, env_spec(ENV), steps, 0)
    return ApexProgram(ctx, RunConfig(steps=steps, seed=0, num_actors=num_actors), InProcessBackend())


def _run(p: ApexProgram, env_steps: int) -> tuple[int, list[int]]:
    """Iterations until ``env_steps``; returns the env steps run and the lengths of the episodes that ended."""
    done, lengths = 0, []
    while done < env_steps:
        report = p.run_iteration()
        done += report.env_steps
        lengths += report.episode_lengths
    return done, lengths


def _kept_sequences(length: int, burn_in: int, period: int) -> int:
    """Sequences an ended episode of ``length`` steps (``length + 1`` timesteps) leaves: the windows starting
    every ``period`` timesteps whose real timesteps reach past the burn-in by at least one transition."""
    last_start = length - burn_in - 1
    return last_start // period + 1 if last_start >= 0 else 0


def test_apex_actors_priorities_reach_the_sum_tree():
    """With learning_starts beyond the run the learner never steps: the leaves are the actors' priorities."""
    p = _apex(2000, learning_starts=100_000, buffer_size=2000)
    try:
        _run(p, 1200)
        assert p.learner_steps == 0
        replay = p.replay.node
        table = replay.table
        assert replay.sampled == 0 and len(table) == replay.inserted > 50
        slots = table.index.live_slots()
        items = table.storage.read(slots)
        actors = [a.node.actor for a in p.actors]
        ref = actors[0].net.state_dict()
        assert all(torch.equal(ref[k], a.net.state_dict()[k]) for a in actors[1:] for k in ref)  # one version
        expected = actors[0].priorities(items)
        assert np.ptp(expected) > 0
        leaves = table.selector.tree.get(slots)
        np.testing.assert_allclose(leaves, expected ** table.selector.alpha, rtol=1e-5)
    finally:
        p.close()


def test_apex_topology_feeds_sequences_at_the_replay_ratio():
    p = _apex(4000)
    try:
        actors = [a.node.actor for a in p.actors]
        eps = np.concatenate([a.epsilon for a in actors])  # copy j of actor i: index 2 i + j of 6
        assert eps == pytest.approx([0.4 ** (1 + 7 * k / 5) for k in range(6)])
        done, lengths = _run(p, 2400)
        replay = p.replay.node
        table = replay.table
        items = table.storage.read(table.index.live_slots())
        assert items["obs"].shape[1:] == (12, 2) and items["lstm_h"].shape[1:] == (1, 16)
        spi, min_size = p.builder.replay_rate
        assert spi == pytest.approx(8 * 1 * 6 / 16) and min_size == 300 // 6
        # the rate band is sized by the sequences per env step (1 / period), not by env steps
        assert p.builder.items_per_env_step == pytest.approx(1 / 6)
        round_items = 3 * 24 * 2 * (1 / 6)  # 3 actors, 24 vector steps of 2 copies per chunk
        slack = 2.0 * max(2 * 8, round_items * spi)
        assert p.rate_band == pytest.approx((spi * min_size, spi * min_size + 2 * slack + 1))
        # every ended episode left exactly its kept windows; running episodes at most one per period of theirs
        ended = sum(_kept_sequences(n, 4, 6) for n in lengths)
        assert ended <= replay.inserted <= ended + (done - sum(lengths)) / 6
        limiter = table.rate_limiter
        lag = spi * replay.inserted - replay.sampled
        assert limiter.min_diff - p.batches_per_call * p.batch_size <= lag <= limiter.max_diff
        assert replay.sampled == p.learner_steps * 8 > 0
    finally:
        p.close()


def test_r2d2_run_resumes_with_its_learner_and_sequence_replay(tmp_path, crash_after_checkpoint):
    ovr = {**SMALL, "checkpoint_every": 512, "eval_episodes": 2, "keep_checkpoints": 10}
    full = shoal.train("r2d2", ENV, steps=1024, seed=3, run_dir=tmp_path / "full", quiet=True, tensorboard=False,
                       overrides=ovr)
    part = tmp_path / "part"
    crash_after_checkpoint(512)
    with pytest.raises(RuntimeError, match="simulated crash"):
        shoal.train("r2d2", ENV, steps=1024, seed=3, run_dir=part, quiet=True, tensorboard=False, overrides=ovr)
    mid, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    table = mid["program"]["learner_node"]["tables"]["replay"]
    assert table["index"]["size"] > 512 / 6 / 2  # at most one sequence per 6 env steps, fewer at episode ends
    assert mid["program"]["learner"]["steps"] == mid["program"]["learner_node"]["learner_steps"] > 0
    resumed = shoal.train(resume=part, quiet=True, tensorboard=False)
    assert resumed.env_steps == full.env_steps == 1024
    a, _ = load_checkpoint(list_checkpoints(full.run_dir / "checkpoints")[-1])
    b, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    la, lb = a["program"]["learner"], b["program"]["learner"]
    assert la["steps"] == lb["steps"] and set(lb) >= {"networks", "target_networks", "optimizer", "steps"}
    ta, tb = (t["program"]["learner_node"]["tables"]["replay"] for t in (a, b))
    # the resumed table holds the pre-crash sequences plus the new ones: about as many as the uninterrupted run's
    assert tb["index"]["size"] + tb["num_evicted"] >= 0.8 * (ta["index"]["size"] + ta["num_evicted"])
    assert resumed.eval is not None and np.isfinite(resumed.eval["mean_return"])


@pytest.mark.parametrize("key, value", [("value_rescaling", False), ("rescale_eps", 0.01), ("gamma", 0.9)])
def test_resume_refuses_settings_baked_into_the_learned_values_and_stored_discounts(key, value):
    """h(Q) is learned with rescale_eps, and the replay's discounts hold gamma: neither may change on resume."""
    from shoal.errors import ConfigError
    from shoal.run.resolve import resolve, resume_changes

    base = resolve("r2d2", ENV, ENV, None, {}, {}).to_yaml_dict()
    assert "changed: lr" in resume_changes(base, resolve("r2d2", ENV, ENV, None, {"lr": 5e-4}, {}, base=base))
    with pytest.raises(ConfigError, match=f"{key} cannot change when resuming"):
        resume_changes(base, resolve("r2d2", ENV, ENV, None, {key: value}, {}, base=base))
