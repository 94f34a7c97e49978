"""The same topology on both backends: identical parameters, bit for bit."""

import pytest
import torch

import shoal
from shoal.io.checkpoint import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.ray


def _final_params(tmp_path, backend, name):
    r = shoal.train("ppo", "CartPole-v1", steps=1536, seed=2, run_dir=tmp_path / name, backend=backend, num_actors=2,
                    quiet=True, tensorboard=False, overrides={"eval_episodes": 3})
    tree, _ = load_checkpoint(list_checkpoints(r.run_dir / "checkpoints")[-1])
    return r, tree["program"]["learner"]


def test_inprocess_and_ray_train_identically(tmp_path):
    a_run, a = _final_params(tmp_path, "inprocess", "a")
    b_run, b = _final_params(tmp_path, "ray", "b")
    assert a["version"] == b["version"] == 3
    for k in a["networks"]:
        assert torch.equal(a["networks"][k], b["networks"][k]), k
    assert a_run.eval["mean_return"] == b_run.eval["mean_return"]
    assert [h["episode_return_mean"] for h in a_run.history] == [h["episode_return_mean"] for h in b_run.history]


def test_inprocess_is_deterministic_and_seed_sensitive(tmp_path):
    _, a = _final_params(tmp_path, "inprocess", "a")
    _, b = _final_params(tmp_path, "inprocess", "b")
    for k in a["networks"]:
        assert torch.equal(a["networks"][k], b["networks"][k])
    r = shoal.train("ppo", "CartPole-v1", steps=1536, seed=5, run_dir=tmp_path / "c", num_actors=2, quiet=True,
                    tensorboard=False, overrides={"eval_episodes": 0})
    c, _ = load_checkpoint(list_checkpoints(r.run_dir / "checkpoints")[-1])
    assert not torch.equal(c["program"]["learner"]["networks"]["pi.logits.weight"], a["networks"]["pi.logits.weight"])


def test_inprocess_backend_never_imports_ray(tmp_path):
    import subprocess
    import sys

    code = ("import sys, shoal; shoal.train('ppo', 'CartPole-v1', steps=256, run_dir='r', quiet=True, "
            "overrides={'eval_episodes': 1}); print('ray' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.stdout.strip().splitlines()[-1] == "False", p.stderr
