"""`import shoal` registers every shoal/ env id, cheaply and with no other process-wide effect."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym

import shoal  # noqa: F401  (registers the ids)
from shoal.envs.registration import BATCHED_ENTRY_POINTS, TOY_IDS


def _python(code: str) -> str:
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout.strip()


def test_import_shoal_registers_the_toy_and_batched_ids_in_a_fresh_process():
    code = ("import sys, shoal, gymnasium as gym\n"
            "print('torch' in sys.modules, 'shoal.envs.toy' in sys.modules, 'shoal.envs.batched' in sys.modules)\n"
            "e = gym.make('shoal/GridMaze-v0', size=8, layout_seed=3); e.reset(seed=0)\n"
            "t = gym.make('shoal/Treasure1D-v0', size=10); t.reset(seed=0)\n"
            "v = gym.make_vec('shoal/CartPole-v1', num_envs=3, vectorization_mode='vector_entry_point')\n"
            "print(e.unwrapped.rows, e.observation_space.n, t.observation_space.n, type(v).__name__)\n")
    before_make, made = _python(code).splitlines()
    assert before_make == "False False False"  # registration imports no env code and no torch
    assert made == "8 64 10 BatchedCartPole"


def test_import_shoal_leaves_torch_settings_alone():
    code = ("import torch.distributions as d\n"
            "before = d.Distribution._validate_args\n"
            "import shoal\n"
            "print(before == d.Distribution._validate_args)\n")
    assert _python(code) == "True"


def test_registered_entry_points_match_the_env_classes():
    from shoal.envs import batched

    assert set(BATCHED_ENTRY_POINTS) == set(batched.BATCHED_IDS)
    for gym_id, shoal_id in batched.BATCHED_IDS.items():
        spec = gym.spec(shoal_id)
        cls = batched._CLASSES[gym_id]
        assert spec.vector_entry_point == BATCHED_ENTRY_POINTS[gym_id] == f"{cls.__module__}:{cls.__name__}"
        assert spec.entry_point == gym.spec(gym_id).entry_point
        assert spec.max_episode_steps == gym.spec(gym_id).max_episode_steps
    for env_id, (entry_point, max_steps) in TOY_IDS.items():
        assert gym.spec(env_id).entry_point == entry_point and gym.spec(env_id).max_episode_steps == max_steps
