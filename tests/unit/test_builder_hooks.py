"""Topologies ask the builder (replay_batch_size, checkpoint_replay, make_reward_normalizer), never read its config."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from shoal.agents import registry
from shoal.config import build
from shoal.core.interfaces import Builder
from shoal.envs import env_spec
from shoal.nets.normalize import RewardNormalizer
from shoal.topologies.nodes import ActorNode, NodeContext

ROOT = Path(__file__).resolve().parents[2]


def _builder(algo: str, env: str = "CartPole-v1", **cfg) -> Builder:
    spec = registry.get(algo)
    return spec.builder_cls()(build(spec.config_cls(), cfg), env_spec(env), total_steps=1000)


@pytest.mark.parametrize("algo, env", [("dqn", "CartPole-v1"), ("apex_dqn", "CartPole-v1"), ("sac", "Pendulum-v1"),
                                       ("td3", "Pendulum-v1")])
def test_off_policy_builders_declare_their_replay_settings(algo, env):
    b = _builder(algo, env, batch_size=48, checkpoint_replay=False)
    assert b.replay_batch_size == 48 and b.checkpoint_replay is False
    assert _builder(algo, env).checkpoint_replay is True


def test_builders_without_replay_declare_none():
    b = _builder("ppo")
    assert b.replay_batch_size == 0 and b.checkpoint_replay is False and b.make_reward_normalizer(4) is None


def test_the_actor_node_scales_rewards_only_when_the_builder_says_so():
    spec = env_spec("Pendulum-v1")
    for on in (True, False):
        ctx = NodeContext("ppo", {"normalize_reward": on, "num_envs": 2, "rollout_length": 8}, "Pendulum-v1", spec,
                          1000, 0)
        node = ActorNode(ctx, 0, 1, 1, 2)
        assert isinstance(node.reward_norm, RewardNormalizer) is on
        if on:
            assert node.reward_norm.gamma == node.builder.config.gamma and len(node.reward_norm.ret) == 2
            node.run(8)
            assert np.abs(node.reward_norm.ret).sum() > 0 and "reward_norm" in node.state()
        node.close()


def test_topologies_never_read_a_builder_config():
    """No ``.config`` attribute and no ``getattr(...)`` with a string field name in the topologies and services.

    A topology dedicated to one algorithm (``DEDICATED_TO``, checked by its misfit) is that
    algorithm's own placement and may read its settings; every shared topology asks through hooks.
    """
    import importlib

    offenders = []
    for path in sorted((ROOT / "shoal" / "topologies").glob("*.py")) + sorted((ROOT / "shoal" / "services").glob("*.py")):
        if path.parent.name == "topologies" and path.stem != "__init__":
            module = importlib.import_module(f"shoal.topologies.{path.stem}")
            dedicated = getattr(module, "DEDICATED_TO", None)
            if dedicated is not None:
                other = next(a for a in ("ppo", "dqn") if a != dedicated)
                assert module.misfit(_builder(other)) is not None  # it really refuses every other algorithm
                continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "config":
                offenders.append(f"{path.name}:{node.lineno} .config")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                    and isinstance(node.args[0], ast.Name) and node.args[0].id in {"b", "builder", "cfg"}):
                offenders.append(f"{path.name}:{node.lineno} getattr")
    assert offenders == []
