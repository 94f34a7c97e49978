"""The recurrent benchmark: shoal PPO's shipped settings are rl-zoo's, and both sides evaluate after the same updates."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

from shoal.agents import registry
from shoal.agents.pg.config import PPOConfig
from shoal.config import build

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("recurrent_bench", ROOT / "benchmarks" / "recurrent.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shipped_recurrent_ppo_settings_are_rl_zoos():
    bench = _bench()
    zoo = bench.RL_ZOO_PPO_LSTM
    shipped = registry.get("ppo").defaults(bench.ENV_ID)
    assert shipped.pop("steps") == bench.shoal_budget()
    cfg = build(PPOConfig, shipped)
    pk = zoo["policy_kwargs"]
    assert cfg.recurrent and cfg.lstm_hidden == pk["lstm_hidden_size"] and cfg.critic_lstm == pk["enable_critic_lstm"]
    assert list(cfg.hidden) == pk["net_arch"]["pi"] == pk["net_arch"]["vf"] and cfg.activation == pk["activation_fn"]
    assert (cfg.num_envs, cfg.rollout_length, cfg.minibatch_size, cfg.epochs) == (
        zoo["n_envs"], zoo["n_steps"], zoo["batch_size"], zoo["n_epochs"])
    assert (cfg.gamma, cfg.gae_lambda, cfg.lr, cfg.clip, cfg.ent_coef) == (
        zoo["gamma"], zoo["gae_lambda"], zoo["learning_rate"], zoo["clip_range"], zoo["ent_coef"])
    assert cfg.lr_schedule == cfg.clip_schedule == "linear"  # rl-zoo's lin_ schedules
    assert cfg.normalize_obs and cfg.normalize_reward  # rl-zoo's normalize: true (VecNormalize's defaults)
    assert cfg.sequence_length == 0  # sb3-contrib recomputes whole rollout columns too


@pytest.fixture
def _threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_sb3_evaluates_after_the_update_on_the_rollout_crossing_each_multiple(monkeypatch: pytest.MonkeyPatch,
                                                                              _threads: None) -> None:
    """At every evaluation sb3 has trained on every rollout before it, as shoal has (4 rollouts of 256 steps)."""
    sb3_contrib = pytest.importorskip("sb3_contrib")
    import stable_baselines3.common.evaluation as evaluation

    RecurrentPPO = sb3_contrib.RecurrentPPO

    trains: list[int] = []
    evals: list[tuple[int, int]] = []
    train, evaluate = RecurrentPPO.train, evaluation.evaluate_policy

    def counting_train(self: Any) -> None:
        trains.append(self.num_timesteps)
        return train(self)

    def counting_evaluate(model: Any, *args: Any, **kwargs: Any) -> Any:
        evals.append((model.num_timesteps, len(trains)))
        return evaluate(model, *args, **kwargs)

    monkeypatch.setattr(RecurrentPPO, "train", counting_train)
    monkeypatch.setattr(evaluation, "evaluate_policy", counting_evaluate)
    r = _bench().worker_sb3(seed=0, threads=1, eval_every=512, episodes=2, budget=1024)
    assert trains == [256, 512, 768, 1024]
    assert evals == [(512, 2), (1024, 4)]  # the second after the last train(), at the end of training
    assert r["evaluations"] == 2 and r["steps"] == 1024


def test_budget_sets_shoals_steps_too(_threads):
    r = _bench().worker_shoal("shoal_ppo", seed=0, threads=1, eval_every=512, episodes=2, budget=1024)
    assert r["steps"] == 1024 and r["evaluations"] == 2
