"""Recurrent PPO and A2C run end to end: in-process and on Ray alike, several actors, resumed from a checkpoint."""

from __future__ import annotations

import pytest
import torch

import shoal
from shoal.errors import ConfigError
from shoal.io.checkpoint import list_checkpoints, load_checkpoint

ENV = "shoal/CartPoleNoVel-v1"
SHORT = {"eval_episodes": 3, "lstm_hidden": 16, "hidden": [16], "epochs": 2}


def _train(tmp_path, name, algo="ppo", **kw):
    kw.setdefault("overrides", SHORT)
    r = shoal.train(algo, ENV, seed=kw.pop("seed", 2), run_dir=tmp_path / name, quiet=True, tensorboard=False, **kw)
    tree, _ = load_checkpoint(list_checkpoints(r.run_dir / "checkpoints")[-1])
    return r, tree["program"]


@pytest.mark.ray
def test_recurrent_ppo_inprocess_and_ray_train_identically(tmp_path):
    a_run, a = _train(tmp_path, "a", steps=1536, backend="inprocess", num_actors=2)
    b_run, b = _train(tmp_path, "b", steps=1536, backend="ray", num_actors=2)
    assert a["learner"]["version"] == b["learner"]["version"] == 3
    assert "pi_lstm.lstm.weight_hh_l0" in a["learner"]["networks"]
    for k in a["learner"]["networks"]:
        assert torch.equal(a["learner"]["networks"][k], b["learner"]["networks"][k]), k
    assert a_run.eval["mean_return"] == b_run.eval["mean_return"]
    assert [h["episode_return_mean"] for h in a_run.history] == [h["episode_return_mean"] for h in b_run.history]


def test_recurrent_a2c_trains_with_several_actors(tmp_path):
    r, prog = _train(tmp_path, "a2c", algo="a2c", steps=2560, num_actors=2,
                     overrides={"eval_episodes": 2, "recurrent": True, "lstm_hidden": 16, "hidden": [16],
                                "rollout_length": 16})
    assert r.env_steps == 2560 and prog["learner"]["version"] == 2560 // (2 * 8 * 16)
    assert "v_lstm.lstm.weight_ih_l0" in prog["learner"]["networks"]


def test_recurrent_ppo_resumes_from_its_checkpoint(tmp_path):
    first, _ = _train(tmp_path, "run", steps=512)
    with pytest.raises(ConfigError, match="recurrent cannot change when resuming"):
        shoal.train(resume=first.run_dir, steps=1024, quiet=True, tensorboard=False, overrides={"recurrent": False})
    resumed = shoal.train(resume=first.run_dir, steps=1024, quiet=True, tensorboard=False)
    assert resumed.env_steps == 1024
    tree, _ = load_checkpoint(list_checkpoints(resumed.run_dir / "checkpoints")[-1])
    assert tree["program"]["learner"]["version"] == 4


@pytest.mark.parametrize("topology", ["impala", "seed", "ga3c", "a3c", "dppo"])
@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_recurrent_runs_on_the_local_topology_only(algo, topology):
    from shoal.agents import registry
    from shoal.config import build
    from shoal.envs import env_spec
    from shoal.topologies import misfit

    spec = registry.get(algo)
    recurrent = spec.builder_cls()(build(spec.config_cls(), {"recurrent": True}), env_spec(ENV), total_steps=1000)
    assert misfit(topology, recurrent) == ("recurrent=true runs on the local topology only; drop --topology or set "
                                           "recurrent=false")
    assert misfit("local", recurrent) is None


def test_recurrent_with_a_learner_group_is_a_one_line_error_before_anything_is_placed(tmp_path, capsys, monkeypatch):
    from shoal.cli import main
    from shoal.topologies import local

    def never(*args, **kwargs):
        raise AssertionError("a learner group was placed")

    monkeypatch.setattr(local, "spawn_learners", never)
    code = main(["train", "ppo", "--env", ENV, "--num-learners", "2", "--steps", "512", "--run-dir",
                 str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "recurrent=true trains with one learner; drop --num-learners or set it to 1" in err[0]
