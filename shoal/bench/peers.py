"""Peer libraries timed side by side with shoal: each in a fresh process, imports included.

Stable-Baselines3 is not a dependency of shoal; install it with ``pip install 'shoal[bench]'``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

SB3_PPO_CARTPOLE = """
import json, time
t0 = time.perf_counter()
import gymnasium as gym, numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

def linear(v):
    return lambda progress_remaining: progress_remaining * v

# rl-zoo hyperparameters for CartPole-v1 (ppo.yml)
env = make_vec_env("CartPole-v1", n_envs=8, seed={seed})
model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
            learning_rate=linear(0.001), clip_range=linear(0.2), seed={seed}, device="cpu", verbose=0)
t1 = time.perf_counter()
model.learn(total_timesteps=100_000)
train_s = time.perf_counter() - t1
returns = []
for i in range(20):
    e = gym.make("CartPole-v1")
    obs, _ = e.reset(seed=10_000 + i)
    done, total = False, 0.0
    while not done:
        a, _ = model.predict(obs, deterministic=True)
        obs, r, term, trunc, _ = e.step(int(a))
        total += r
        done = term or trunc
    returns.append(total)
print(json.dumps({{"train_s": train_s, "eval": float(np.mean(returns)), "steps": 100_000,
                   "in_process_s": time.perf_counter() - t0}}))
"""


def timed_python(code: str) -> dict[str, Any]:
    """Run ``code`` in a new interpreter; its last stdout line is JSON. Adds ``process_s``."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"benchmark process failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def sb3_ppo_cartpole(seed: int) -> dict[str, Any]:
    """Stable-Baselines3 PPO with rl-zoo's CartPole-v1 hyperparameters, 100k steps, then 20 deterministic episodes."""
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        from shoal.errors import ShoalError

        raise ShoalError("--vs-sb3 needs Stable-Baselines3; install it with: pip install 'shoal[bench]'") from None
    return timed_python(SB3_PPO_CARTPOLE.format(seed=seed))
