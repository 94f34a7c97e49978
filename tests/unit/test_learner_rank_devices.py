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


def test_cuda_ranks_on_an_explicit_gpu_take_that_gpu_and_the_ones_after_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert rank_devices("cuda:0", 2) == ["cuda:0", "cuda:1"]
    assert rank_devices("cuda:1", 3) == ["cuda:1", "cuda:2", "cuda:3"]
    assert rank_devices("cuda:2", 2) == ["cuda:2", "cuda:3"]


def test_more_cuda_ranks_than_gpus_from_an_explicit_gpu_on_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with pytest.raises(ConfigError, match=r"^num_learners=3 learner processes on device='cuda:2' need one GPU each, "
                                          r"cuda:2 to cuda:4, but this machine has 4 GPUs; lower num_learners to 2 "):
        rank_devices("cuda:2", 3)
    with pytest.raises(ConfigError, match="device='cuda:one' is not a CUDA device name"):
        rank_devices("cuda:one", 2)


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
