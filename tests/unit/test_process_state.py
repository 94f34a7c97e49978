"""Importing shoal and building nodes leave the process's global state alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import torch

from shoal.envs import env_spec
from shoal.topologies.nodes import ActorNode, LearnerNode, NodeContext


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONHASHSEED": "0"})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_shoal_leaves_distribution_validation_and_global_rngs_unchanged() -> None:
    out = _run("""
        import numpy as np, torch
        torch.manual_seed(123); np.random.seed(123)
        validate = torch.distributions.Distribution._validate_args
        t, n = torch.get_rng_state(), np.random.get_state()[1].copy()
        import shoal, shoal.agents.continuous.builder, shoal.agents.dqn.builder, shoal.agents.pg.builder
        import shoal.topologies.local, shoal.run.runner
        assert torch.distributions.Distribution._validate_args == validate, "validation default changed"
        assert torch.equal(torch.get_rng_state(), t), "torch RNG moved"
        assert (np.random.get_state()[1] == n).all(), "numpy RNG moved"
        print("ok")
    """)
    assert out == "ok"


def test_importing_shoal_leaves_malloc_alone() -> None:
    """The glibc thresholds are tuned only by a node owning its process: importing the learners must not."""
    out = _run("""
        import shoal.agents.continuous.learner, shoal.topologies.nodes, shoal.core.memory as m
        print(m._RETAINED)
    """)
    assert out == "False"


def _ctx(algo: str, env: str, agent: dict) -> NodeContext:
    return NodeContext(algo, agent, env, env_spec(env), 1000, seed=5)


def test_building_nodes_leaves_the_callers_rngs_unchanged() -> None:
    torch.manual_seed(7)
    np.random.seed(7)
    t, n = torch.get_rng_state(), np.random.get_state()[1].copy()
    ctx = _ctx("sac", "Pendulum-v1", {"hidden": [8], "batch_size": 8})
    learner = LearnerNode(ctx)
    actor = ActorNode(ctx, 0, 1, env_seed=1, actor_seed=2)
    assert torch.equal(torch.get_rng_state(), t) and (np.random.get_state()[1] == n).all()
    # ... and every node still starts from the run's initial weights, whatever the caller's RNG state.
    torch.manual_seed(8)
    again = LearnerNode(ctx)
    for k, v in learner.networks.state_dict().items():
        assert torch.equal(v, again.networks.state_dict()[k]), k
        if k in actor.actor.net.state_dict():
            assert torch.equal(v, actor.actor.net.state_dict()[k]), k
    actor.close()


def test_a_node_in_the_driver_does_not_own_its_process() -> None:
    ctx = _ctx("dqn", "CartPole-v1", {})
    assert not ctx.owns_process()
    out = _run(f"""
        import pickle
        ctx = pickle.loads({__import__("pickle").dumps(ctx)!r})
        print(ctx.owns_process())
    """)
    assert out == "True"  # unpickled in another process (as on a Ray worker)


def test_retain_freed_memory_is_idempotent() -> None:
    out = _run("""
        from shoal.core.memory import retain_freed_memory
        print(retain_freed_memory() == retain_freed_memory())
    """)
    assert out == "True"
