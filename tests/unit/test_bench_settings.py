"""The SAC benchmark runs shoal at exactly the settings SB3 gets (rl-zoo's Pendulum-v1 ones)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from shoal.agents.continuous.config import SACConfig
from shoal.bench.peers import RL_ZOO_SAC_PENDULUM
from shoal.config import build

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_shoal_sac_benchmark_settings_equal_rl_zoo() -> None:
    settings = _load("sac_pendulum").SHOAL_AT_RL_ZOO
    cfg = build(SACConfig, settings)  # a valid shoal config
    zoo = RL_ZOO_SAC_PENDULUM
    assert list(cfg.hidden) == zoo["policy_kwargs"]["net_arch"]
    assert cfg.actor_lr == cfg.critic_lr == cfg.alpha_lr == zoo["learning_rate"]
    assert (cfg.batch_size, cfg.buffer_size, cfg.learning_starts) == (zoo["batch_size"], zoo["buffer_size"],
                                                                       zoo["learning_starts"])
    assert (cfg.tau, cfg.gamma) == (zoo["tau"], zoo["gamma"])
    # one gradient update per env step, one env, 1-step targets, critics' targets updated every step
    assert cfg.replay_ratio == zoo["gradient_steps"] / zoo["train_freq"] == 1.0
    assert (cfg.num_envs, cfg.n_step, cfg.policy_delay, cfg.target_every) == (1, 1, 1, 1)
    assert cfg.autotune and zoo["ent_coef"] == "auto" and cfg.alpha == 1.0 and cfg.target_entropy is None
    assert cfg.random_warmup and not cfg.normalize_obs and cfg.activation == "relu"

