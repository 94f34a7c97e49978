"""Shared pieces of the topology tests."""

from dataclasses import asdict

import pytest

from shoal.agents import registry
from shoal.config import build
from shoal.envs import env_spec
from shoal.topologies.nodes import NodeContext


def make_ctx(algo: str = "impala", steps: int = 20_000, seed: int = 3, **agent) -> NodeContext:
    """A node context for a small CartPole actor-critic (4 envs x 16 steps per unroll)."""
    spec = registry.get(algo)
    cfg = build(spec.config_cls(), {"num_envs": 4, "rollout_length": 16, **agent})
    return NodeContext(algo, asdict(cfg), "CartPole-v1", env_spec("CartPole-v1"), steps, seed=seed)


@pytest.fixture
def small_ctx():
    """``small_ctx(algo="impala", **agent_settings) -> NodeContext``."""
    return make_ctx
