"""`shoal record` writes real Minari datasets; shoal's loader and offline training read them back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import shoal
from shoal.cli import main
from shoal.data.offline import load_transitions, split_episodes, transitions_table
from shoal.errors import ConfigError


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short DQN run on CartPole (a real checkpoint; its policy need not be good)."""
    d = tmp_path_factory.mktemp("runs") / "dqn"
    shoal.train("dqn", "CartPole-v1", steps=1500, run_dir=d, tensorboard=False, overrides={"eval_episodes": 0})
    return d


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("runs") / "sac"
    shoal.train("sac", "Pendulum-v1", steps=300, run_dir=d, tensorboard=False,
                overrides={"eval_episodes": 0, "learning_starts": 100, "hidden": [16, 16]})
    return d


@pytest.fixture
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def _replay(run_dir: Path, episodes: int, seed: int, epsilon: float = 0.0, sigma: float = 0.0) -> list[dict]:
    """Play the run's greedy policy as the recorder does, independently: what the dataset must hold."""
    import gymnasium as gym

    from shoal.run.reload import load_policy

    policy, cfg, _ = load_policy(run_dir)
    env = gym.make(cfg["env"])
    rng = np.random.default_rng(seed)
    out = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        ep: dict[str, list] = {"obs": [obs], "action": [], "reward": [], "terminated": [], "truncated": []}
        while True:
            a = np.asarray(policy(obs[None]))[0]
            if isinstance(env.action_space, gym.spaces.Discrete):
                if epsilon and rng.random() < epsilon:
                    a = rng.integers(env.action_space.n)
                a = int(a)
            else:
                assert isinstance(env.action_space, gym.spaces.Box)
                low, high = env.action_space.low, env.action_space.high
                a = np.clip(a + sigma * (high - low) / 2 * rng.standard_normal(a.shape), low, high).astype(np.float32)
            obs, r, term, trunc, _ = env.step(a)
            for k, v in (("obs", obs), ("action", a), ("reward", r), ("terminated", term), ("truncated", trunc)):
                ep[k].append(v)
            if term or trunc:
                break
        out.append({k: np.asarray(v) for k, v in ep.items()})
    env.close()
    return out


def test_record_round_trip_through_minaris_reader(cartpole_run: Path, minari_root: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import minari

    assert main(["record", str(cartpole_run), "--episodes", "4", "--out", "shoal/cartpole-eps0.3-v0",
                 "--epsilon", "0.3", "--seed", "7"]) == 0
    assert "4 episodes" in capsys.readouterr().out
    ds = minari.load_dataset("shoal/cartpole-eps0.3-v0")
    played = _replay(cartpole_run, 4, 7, epsilon=0.3)
    assert ds.total_episodes == 4 and ds.total_steps == sum(len(p["reward"]) for p in played)
    assert ds.env_spec.id == "CartPole-v1"
    for ep, p in zip(ds.iterate_episodes(), played):
        assert len(ep) == len(p["reward"])
        np.testing.assert_array_equal(ep.observations, p["obs"])
        np.testing.assert_array_equal(ep.actions, p["action"])
        np.testing.assert_array_equal(ep.rewards, p["reward"])
        np.testing.assert_array_equal(ep.terminations, p["terminated"])
        np.testing.assert_array_equal(ep.truncations, p["truncated"])
    meta = ds.storage.metadata["shoal"]
    assert meta["epsilon"] == 0.3 and meta["action_noise"] == 0.0 and meta["seed"] == 7
    assert meta["source_run"] == str(cartpole_run.resolve()) and meta["source_algo"] == "dqn"
    assert meta["policy"] == "greedy" and meta["episodes"] == 4
    assert meta["mean_return"] == pytest.approx(np.mean([p["reward"].sum() for p in played]))
    # the random actions really are there: some differ from the greedy policy's
    from shoal.run.reload import load_policy

    greedy, _, _ = load_policy(cartpole_run)
    obs = np.concatenate([p["obs"][:-1] for p in played]).astype(np.float32)
    acts = np.concatenate([p["action"] for p in played])
    assert 0.05 < np.mean(greedy(obs) != acts) < 0.3


def test_record_continuous_noise_into_a_folder(pendulum_run: Path, tmp_path: Path, minari_root: Path) -> None:
    import minari

    out = tmp_path / "pendulum-noisy"
    assert main(["record", str(pendulum_run), "--episodes", "2", "--out", str(out), "--action-noise", "0.5"]) == 0
    ds = minari.MinariDataset(out / "data")
    played = _replay(pendulum_run, 2, 0, sigma=0.5)
    for ep, p in zip(ds.iterate_episodes(), played):
        np.testing.assert_allclose(ep.actions, p["action"], rtol=1e-6)
        np.testing.assert_allclose(ep.observations, p["obs"], rtol=1e-6)
        assert (np.abs(ep.actions) <= 2.0).all() and ep.truncations[-1]
    assert ds.storage.metadata["shoal"]["action_noise"] == 0.5
    data = load_transitions(out)  # shoal's reader, by folder
    assert len(data) == 400 and data.action.shape == (400, 1)
    np.testing.assert_allclose(data.next_obs[:199], data.obs[1:200])
    assert data.truncated[199] and not data.terminated.any()


@pytest.mark.parametrize("args, message", [
    (["--action-noise", "0.3"], "--action-noise applies to continuous actions"),
    (["--epsilon", "1.5"], "--epsilon must be in"),
    (["--episodes", "0"], "--episodes must be at least 1"),
])
def test_bad_record_options_are_one_line_errors_and_write_nothing(cartpole_run: Path, minari_root: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   args: list[str], message: str) -> None:
    argv = ["record", str(cartpole_run), "--episodes", "2", "--out", "shoal/bad-v0", *args]
    if "--episodes" in args:
        argv = ["record", str(cartpole_run), "--out", "shoal/bad-v0", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shoal: error:") and message in err and len(err.splitlines()) == 1
    assert not (minari_root / "shoal" / "bad-v0").exists()
    assert not list(minari_root.glob("**/.shoal-record-*"))


def test_noise_kind_must_fit_the_env(pendulum_run: Path, minari_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["record", str(pendulum_run), "--episodes", "1", "--out", "shoal/p-v0", "--epsilon", "0.1"]) == 2
    assert "--epsilon applies to discrete actions" in capsys.readouterr().err
    assert not (minari_root / "shoal" / "p-v0").exists()


def test_missing_run_and_existing_dataset_are_errors(cartpole_run: Path, tmp_path: Path, minari_root: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["record", str(tmp_path / "nope"), "--episodes", "1", "--out", "shoal/x-v0"]) == 2
    assert "has no config.yaml" in capsys.readouterr().err
    assert main(["record", str(cartpole_run), "--episodes", "1", "--out", "shoal/x-v0"]) == 0
    assert main(["record", str(cartpole_run), "--episodes", "1", "--out", "shoal/x-v0"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_failure_while_writing_leaves_no_dataset(cartpole_run: Path, minari_root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import minari

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", broken)
    from shoal.run.record import record_dataset

    with pytest.raises(OSError):
        record_dataset(cartpole_run, 1, "shoal/half-v0")
    assert not (minari_root / "shoal" / "half-v0").exists()
    assert not list(minari_root.glob("**/.shoal-record-*"))


def test_validation_split_holds_out_whole_episodes(cartpole_run: Path, minari_root: Path) -> None:
    assert main(["record", str(cartpole_run), "--episodes", "10", "--out", "shoal/split-v0", "--epsilon", "0.2"]) == 0
    data = load_transitions("shoal/split-v0")
    train, val = split_episodes(data, 0.2, seed=0)
    assert val is not None and len(train) + len(val) == len(data)
    assert set(np.unique(val.episode)).isdisjoint(np.unique(train.episode)) and len(np.unique(val.episode)) == 2
    assert split_episodes(data, 0.0)[1] is None
    items = train.items(0.9)
    np.testing.assert_array_equal(items["discount"], np.where(train.terminated, 0.0, np.float32(0.9)))
    assert train.terminated.sum() == 8  # the 8 training episodes of this short-lived policy all terminate
    table = transitions_table(train, 0.9)
    sampled, _, _ = table.sample(64)
    assert len(table) == len(train) and set(sampled) == {"obs", "action", "reward", "discount", "next_obs"}
    with pytest.raises(ConfigError, match="no Minari dataset"):
        load_transitions("shoal/none-v0")


def test_offline_training_writes_a_run_directory(cartpole_run: Path, tmp_path: Path, minari_root: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["record", str(cartpole_run), "--episodes", "6", "--out", "shoal/train-v0", "--epsilon", "0.3"]) == 0
    for algo in ("bc", "cql", "offline_dqn"):
        rd = tmp_path / algo
        assert main(["train", algo, "--dataset", "shoal/train-v0", "--steps", "60", "--run-dir", str(rd), "--quiet",
                     "eval_episodes=2", "updates_per_iteration=20", "hidden=[16]", "batch_size=32"]) == 0
        cfg = (rd / "config.yaml").read_text()
        assert "env: CartPole-v1" in cfg and "topology: offline" in cfg
        assert json.loads((rd / "eval.json").read_text())["episodes"] == 2
        assert (rd / "metrics.csv").read_text().splitlines()[0].startswith("env_steps")
        ckpts = sorted((rd / "checkpoints").glob("*.json"))
        assert ckpts and ckpts[-1].with_suffix(".safetensors").exists() and not list(rd.rglob("*.pkl"))
        assert main(["eval", str(rd), "--episodes", "2"]) == 0
    assert main(["train", "offline_sac", "--dataset", "shoal/train-v0", "--steps", "10", "--run-dir",
                 str(tmp_path / "s"), "--quiet"]) == 2
    assert "offline_sac needs continuous actions" in capsys.readouterr().err
    assert main(["train", "ppo", "--dataset", "shoal/train-v0", "--steps", "10", "--quiet"]) == 2
    assert "--dataset applies to the offline algorithms" in capsys.readouterr().err


def test_offline_runs_resume_and_bc_stops_early(cartpole_run: Path, tmp_path: Path, minari_root: Path) -> None:
    from shoal.run.offline import train_offline

    assert main(["record", str(cartpole_run), "--episodes", "8", "--out", "shoal/resume-v0", "--epsilon", "0.3"]) == 0
    common = {"eval_episodes": 1, "updates_per_iteration": 20, "hidden": [16], "batch_size": 32}
    rd = tmp_path / "cql"
    train_offline("cql", "shoal/resume-v0", steps=40, run_dir=rd, tensorboard=False, overrides=common)
    run = shoal.train(resume=rd, steps=80, tensorboard=False)
    assert run.env_steps == 80
    rows = (rd / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows if r] == [20, 40, 60, 80]
    # patience 2, a check every 10 updates: BC stops long before its budget and says how many updates it took
    bc = train_offline("bc", "shoal/resume-v0", steps=100_000, run_dir=tmp_path / "bc", tensorboard=False,
                       overrides={**common, "validation": 0.25, "validate_every": 10, "patience": 2,
                                  "min_delta": 10.0})
    last = bc.history[-1]
    assert bc.env_steps == 100_000 and last["converged"] > 0 and last["updates"] == 30


def test_a_dataset_that_does_not_fit_the_env_is_an_error(cartpole_run: Path, tmp_path: Path, minari_root: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["record", str(cartpole_run), "--episodes", "2", "--out", "shoal/fit-v0"]) == 0
    assert main(["train", "cql", "--dataset", "shoal/fit-v0", "--env", "Acrobot-v1", "--steps", "10", "--quiet",
                 "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "has observations of shape (4,)" in err and "--env" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # a run that never checkpointed is removed
    assert main(["train", "cql", "--dataset", "shoal/nothing-v0", "--steps", "10", "--quiet"]) == 2
    assert "no Minari dataset" in capsys.readouterr().err
    assert main(["train", "cql", "--env", "CartPole-v1", "--steps", "10", "--quiet", "--topology", "local",
                 "dataset=" + str(minari_root / "shoal" / "fit-v0")]) == 2
    assert "runs on the offline topology" in capsys.readouterr().err


def test_continuous_offline_learners_train_and_evaluate(pendulum_run: Path, tmp_path: Path, minari_root: Path) -> None:
    from shoal.run.offline import train_offline

    assert main(["record", str(pendulum_run), "--episodes", "2", "--out", "shoal/pend-v0", "--action-noise", "0.5"]) == 0
    common = {"eval_episodes": 1, "updates_per_iteration": 10, "hidden": [16], "batch_size": 32}
    for algo, extra in (("bc", {"validation": 0.5, "validate_every": 5, "patience": 0}), ("bc", {"loss": "mse"}),
                        ("cql", {"num_sampled_actions": 2}), ("cql", {"lagrange": True, "num_sampled_actions": 2}),
                        ("offline_sac", {})):
        rd = tmp_path / f"{algo}-{len(list(tmp_path.iterdir()))}"
        run = train_offline(algo, "shoal/pend-v0", steps=20, run_dir=rd, tensorboard=False, overrides={**common, **extra})
        assert run.eval is not None and -2000 < run.eval["mean_return"] <= 0
        assert main(["eval", str(rd), "--episodes", "1"]) == 0


def test_each_episode_is_played_by_a_fresh_policy(cartpole_run: Path, minari_root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A policy that keeps state across calls (an LSTM state, h-DQN's goals) starts every episode afresh,
    as evaluation gives each episode: here one that acts 0 on its first call and 1 after."""
    import minari

    import shoal.run.reload as reload

    real = reload.load_agent

    class Stateful:
        def __init__(self) -> None:
            self.calls = 0

        def __call__(self, obs: np.ndarray) -> np.ndarray:
            self.calls += 1
            return np.full(len(obs), 0 if self.calls == 1 else 1, np.int64)

    class Builder:
        def make_policy(self, net: object, evaluation: bool) -> Stateful:
            return Stateful()

    def load_agent(run_dir: Path) -> tuple:
        _, net, cfg, steps = real(run_dir)
        return Builder(), net, cfg, steps

    monkeypatch.setattr(reload, "load_agent", load_agent)
    from shoal.run.record import record_dataset

    record_dataset(cartpole_run, 3, "shoal/fresh-v0")
    episodes = list(minari.load_dataset("shoal/fresh-v0").iterate_episodes())
    assert len(episodes) == 3
    for ep in episodes:
        assert ep.actions[0] == 0 and (ep.actions[1:] == 1).all()


def test_a_run_on_preprocessed_observations_is_refused(cartpole_run: Path, minari_root: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An Atari run's policy reads stacked 84x84 frames, not the env's own 210x160 RGB: refused, nothing written."""
    import shoal.run.reload as reload

    real = reload.load_agent

    def atari_agent(run_dir: Path) -> tuple:
        builder, net, cfg, steps = real(run_dir)
        return builder, net, {**cfg, "env": "ALE/Pong-v5"}, steps

    monkeypatch.setattr(reload, "load_agent", atari_agent)
    from shoal.run.record import record_dataset

    with pytest.raises(ConfigError, match=r"preprocessing \(observations \[4, 84, 84\], the env gives \[210, 160, 3\]\)"):
        record_dataset(cartpole_run, 1, "shoal/atari-v0")
    assert not (minari_root / "shoal" / "atari-v0").exists()


def test_action_noise_needs_bounded_actions(pendulum_run: Path, minari_root: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The noise's std is a fraction of ``(high - low) / 2``: unbounded actions would make it infinite."""
    import dataclasses

    import shoal.run.record as record

    real = record.env_spec

    def unbounded(env_id: str) -> object:
        spec = real(env_id)
        inf = np.full_like(np.asarray(spec.action_high, np.float64), np.inf)
        return dataclasses.replace(spec, action_low=-inf, action_high=inf)

    monkeypatch.setattr(record, "env_spec", unbounded)
    with pytest.raises(ConfigError, match="unbounded actions"):
        record.record_dataset(pendulum_run, 1, "shoal/inf-v0", action_noise=0.5)
    assert not (minari_root / "shoal" / "inf-v0").exists()
