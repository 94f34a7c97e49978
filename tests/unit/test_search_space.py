"""Search spaces for `shoal tune`: the shipped file, parsing, validation and sampling through Optuna."""

from __future__ import annotations

import optuna
import pytest

from shoal.errors import ConfigError
from shoal.run.search_space import decode, load_space, sample


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn", "sac", "td3", "q_learning"])
def test_shipped_spaces_parse_and_name_real_settings(algo):
    from shoal.agents import registry
    from shoal.config import build

    space = load_space(algo)
    assert space
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    values = sample(space, trial)
    build(registry.get(algo).config_cls(), values)  # every sampled point is a valid configuration


def _space(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_each_type_samples_within_its_bounds_and_lists_round_trip(tmp_path):
    path = _space(tmp_path, """
ppo:
  lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
  epochs: {type: int, low: 2, high: 10, step: 2}
  gamma: {type: categorical, choices: [0.9, 0.99]}
  hidden: {type: categorical, choices: [[64, 64], [256, 256]]}
""")
    space = load_space("ppo", path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_hidden = set()
    for _ in range(30):
        trial = study.ask()
        v = sample(space, trial)
        assert 1e-5 <= v["lr"] <= 1e-2
        assert v["epochs"] in (2, 4, 6, 8, 10)
        assert v["gamma"] in (0.9, 0.99)
        assert v["hidden"] in ([64, 64], [256, 256])
        seen_hidden.add(tuple(v["hidden"]))
        # Optuna stores the list as text; decoding gives back the list the run was given.
        assert decode(space, trial.params)["hidden"] == v["hidden"]
        study.tell(trial, 0.0)
    assert seen_hidden == {(64, 64), (256, 256)}
    dist = study.trials[0].distributions["lr"]
    assert isinstance(dist, optuna.distributions.FloatDistribution) and dist.log


@pytest.mark.parametrize("text, message", [
    ("ppo:\n  lrr: {type: float, low: 0.1, high: 1.0}\n", "did you mean 'lr'"),
    ("ppo:\n  lr: {type: gaussian, low: 0.1, high: 1.0}\n", "use float, int or categorical"),
    ("ppo:\n  lr: {type: float, low: 1.0, high: 0.1}\n", "must be below high"),
    ("ppo:\n  lr: {type: float, low: 0.0, high: 0.1, log: true}\n", "log scale needs low > 0"),
    ("ppo:\n  lr: {type: float, low: 1e-5, high: 0.1}\n", "YAML reads 1e-5 as text"),
    ("ppo:\n  epochs: {type: int, low: 1.5, high: 4}\n", "must be an integer"),
    ("ppo:\n  gamma: {type: categorical}\n", "no choices list"),
    ("ppo:\n  gamma: {type: categorical, choices: [0.9], low: 0}\n", "takes only choices"),
    ("ppo:\n  lr: {type: float, low: 0.1, high: 1.0, scale: 2}\n", "unknown keys"),
    ("ppo:\n  steps: {type: int, low: 100, high: 1000}\n", "set by the tuner"),
    ("a2c:\n  lr: {type: float, low: 0.1, high: 1.0}\n", "no search space for 'ppo'"),
])
def test_a_wrong_space_is_one_line_naming_the_parameter(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_space("ppo", _space(tmp_path, text))
    assert "\n" not in str(e.value)


ENV_OF = {"ppo": "CartPole-v1", "a2c": "CartPole-v1", "dqn": "CartPole-v1", "sac": "Pendulum-v1", "td3": "Pendulum-v1",
          "q_learning": "FrozenLake-v1"}


@pytest.mark.parametrize("algo", sorted(ENV_OF))
def test_every_choice_and_bound_of_the_shipped_spaces_resolves(algo):
    # Each extreme of each parameter, set alone on the algorithm's env, is a config the runner takes.
    from shoal.run.resolve import resolve

    env = ENV_OF[algo]
    for p in load_space(algo):
        if p.kind == "categorical":
            values = list(p.choices)
        else:
            assert p.low is not None and p.high is not None
            values = [int(p.low), int(p.high)] if p.kind == "int" else [p.low, p.high]
        for v in values:
            resolve(algo, env, env, None, {p.name: v}, {})


def test_a_stored_value_the_space_cannot_give_back_is_one_line(tmp_path):
    space = load_space("ppo", _space(tmp_path, "ppo:\n  gamma: {type: categorical, choices: [0.9, 0.99]}\n"
                                                "  epochs: {type: int, low: 2, high: 10}\n"))
    assert decode(space, {"gamma": 0.99, "epochs": 4.0}) == {"gamma": 0.99, "epochs": 4}
    with pytest.raises(ConfigError, match=r"stores gamma=0.5, which the search space cannot give back") as e:
        decode(space, {"gamma": 0.5})
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="stores epochs='many'"):
        decode(space, {"epochs": "many"})
