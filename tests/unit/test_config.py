"""Config validation: types, ranges, unknown keys, files."""

import pytest

from shoal.agents.pg.config import A2CConfig, PPOConfig
from shoal.config import build, parse_overrides
from shoal.errors import ConfigError
from shoal.run.resolve import resolve


def test_coercion_and_defaults():
    cfg = build(PPOConfig, {"lr": "3e-4", "hidden": [32, 32], "epochs": 4.0, "normalize_obs": "true"})
    assert cfg.lr == 3e-4 and cfg.hidden == (32, 32) and cfg.epochs == 4 and cfg.normalize_obs is True
    assert build(A2CConfig, {}).loss == "a2c"


@pytest.mark.parametrize("values,match", [
    ({"lr": -1.0}, "lr must be > 0"),
    ({"lr": "fast"}, "must be a number"),
    ({"epochs": 1.5}, "must be an integer"),
    ({"gamma": 1.5}, r"gamma must be in \[0.0, 1.0\]"),
    ({"lrr": 0.1}, "did you mean 'lr'"),
    ({"loss": "huber"}, "not allowed"),
    ({"hidden": [0]}, "hidden sizes must be > 0"),
    ({"normalize_obs": "maybe"}, "true or false"),
])
def test_bad_values_name_the_problem(values, match):
    with pytest.raises(ConfigError, match=match):
        build(PPOConfig, values)


def test_resolve_precedence(tmp_path):
    from shoal.agents import registry
    from shoal.settings import RunConfig

    # Every value below differs from each source it must beat, so each assert can fail.
    dataclass_cfg, per_env = PPOConfig(), registry.get("ppo").defaults("CartPole-v1")
    assert dataclass_cfg.gamma != per_env["gamma"] and dataclass_cfg.epochs != per_env["epochs"] != 3 != 5
    assert dataclass_cfg.lr != per_env["lr"] != 0.0015 and RunConfig().steps != per_env["steps"] != 777 != 999
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.0015\nepochs: 3\nrun:\n  steps: 777\n  seed: 2\n")
    r = resolve("ppo", "CartPole-v1", "CartPole-v1", f, parse_overrides(["epochs=5", "seed=4"]), {"steps": None})
    assert r.agent.gamma == per_env["gamma"]  # per-env default beats dataclass default
    assert r.agent.lr == 0.0015  # file beats per-env default and dataclass default
    assert r.agent.epochs == 5  # key=value beats file and per-env default
    assert r.run.steps == 777  # file beats per-env steps; a CLI value of None does not count
    assert r.run.seed == 4  # key=value beats the file's run section
    r = resolve("ppo", "CartPole-v1", "CartPole-v1", f, parse_overrides(["steps=888"]), {"steps": 999})
    assert r.run.steps == 999  # a CLI flag beats key=value and the file


def test_bad_config_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve("ppo", "CartPole-v1", "CartPole-v1", bad, {}, {})
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        resolve("ppo", "CartPole-v1", "CartPole-v1", lst, {}, {})
    with pytest.raises(ConfigError, match="cannot read config file"):
        resolve("ppo", "CartPole-v1", "CartPole-v1", tmp_path / "none.yaml", {}, {})


def test_override_syntax():
    assert parse_overrides(["hidden=[8, 8]", "lr=1e-3", "name=x"]) == {"hidden": [8, 8], "lr": 1e-3, "name": "x"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])
