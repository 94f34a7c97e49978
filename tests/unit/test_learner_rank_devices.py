"""Learner ranks in processes of their own on one host: a GPU each for CUDA, or a clear error."""

from dataclasses import asdict, replace

import pytest
import torch

from shoal.agents import registry
from shoal.backends.inprocess import InProcessBackend
from shoal.config import build
from shoal.envs import env_spec
from shoal.errors import ConfigError
from shoal.topologies.learners import LearnerGroup, LearnerRankNode, rank_devices
from shoal.topologies.nodes import NodeContext


def test_cpu_ranks_share_the_cpu_and_cuda_ranks_take_a_gpu_each(monkeypatch):
    assert rank_devices("cpu", 3) == ["cpu"] * 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert rank_devices("cuda", 2) == ["cuda:0", "cuda:1"]


def test_more_cuda_ranks_than_gpus_is_a_config_error_before_any_rank_starts(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="num_learners=2 learner processes on device='cuda' need one GPU each, "
                                          "this machine has 1"):
        rank_devices("cuda", 2)
    spec = registry.get("ppo")
    ctx = NodeContext("ppo", asdict(build(spec.config_cls(), {"num_envs": 4})), "CartPole-v1", env_spec("CartPole-v1"),
                      10_000, seed=0)
    spawned = []
    monkeypatch.setattr("shoal.topologies.learners.ProcessHandle", lambda *a, **k: spawned.append(a))
    with pytest.raises(ConfigError, match="need one GPU each"):
        LearnerGroup(InProcessBackend(), LearnerRankNode, replace(ctx, device="cuda"), 2)
    assert spawned == []  # refused before a rank process was started
