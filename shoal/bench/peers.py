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


def _require_sb3() -> None:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        from shoal.errors import ShoalError

        raise ShoalError("this benchmark needs Stable-Baselines3; install it with: pip install 'shoal[bench]'") from None


#: rl-zoo's DQN hyperparameters for CartPole-v1 (hyperparams/dqn.yml; n_timesteps 5e4 there).
RL_ZOO_DQN_CARTPOLE: dict[str, Any] = {
    "learning_rate": 2.3e-3, "batch_size": 64, "buffer_size": 100_000, "learning_starts": 1000, "gamma": 0.99,
    "target_update_interval": 10, "train_freq": 256, "gradient_steps": 128, "exploration_fraction": 0.16,
    "exploration_final_eps": 0.04, "policy_kwargs": {"net_arch": [256, 256]}}

#: rl-zoo's SAC hyperparameters for Pendulum-v1 (hyperparams/sac.yml: n_timesteps 2e4, learning_rate 1e-3),
#: spelled out with the SB3 defaults rl-zoo leaves in place.
RL_ZOO_SAC_PENDULUM: dict[str, Any] = {
    "learning_rate": 1e-3, "buffer_size": 1_000_000, "learning_starts": 100, "batch_size": 256, "tau": 0.005,
    "gamma": 0.99, "train_freq": 1, "gradient_steps": 1, "ent_coef": "auto", "policy_kwargs": {"net_arch": [256, 256]}}


def sb3_dqn_to_target(env_id: str, seed: int, budget: int, eval_every: int, eval_episodes: int,
                      target: float) -> dict[str, Any]:
    """SB3 DQN (rl-zoo CartPole settings) until an evaluation reaches ``target``, in this process.

    Evaluation: ``EvalCallback`` every ``eval_every`` env steps, ``eval_episodes`` deterministic
    episodes on as many env copies (one each, as shoal evaluates), stopped by
    ``StopTrainingOnRewardThreshold``. ``train_s`` (wall clock) and ``cpu_s`` (CPU time) run
    from building the model to the stop, evaluations included.
    """
    _require_sb3()
    import time

    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
    from stable_baselines3.common.env_util import make_vec_env

    t0, c0 = time.perf_counter(), time.process_time()
    model = DQN("MlpPolicy", env_id, seed=seed, device="cpu", verbose=0, **RL_ZOO_DQN_CARTPOLE)
    eval_env = make_vec_env(env_id, n_envs=eval_episodes, seed=seed + 10_000)
    stop = StopTrainingOnRewardThreshold(reward_threshold=target, verbose=0)
    cb = EvalCallback(eval_env, callback_on_new_best=stop, eval_freq=eval_every, n_eval_episodes=eval_episodes,
                      deterministic=True, verbose=0)
    model.learn(total_timesteps=budget, callback=cb)
    train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return {"train_s": train_s, "cpu_s": cpu_s, "steps": int(model.num_timesteps), "eval_mean": float(cb.last_mean_reward),
            "evaluations": int(model.num_timesteps) // eval_every, "solved": bool(cb.best_mean_reward >= target)}


def sb3_sac(env_id: str, seed: int, steps: int) -> tuple[Any, float, float]:
    """SB3 SAC with rl-zoo's Pendulum settings trained for ``steps``, in this process: ``(model, wall s, cpu s)``."""
    _require_sb3()
    import time

    import gymnasium as gym
    from stable_baselines3 import SAC

    t0, c0 = time.perf_counter(), time.process_time()
    model = SAC("MlpPolicy", gym.make(env_id), seed=seed, device="cpu", verbose=0, **RL_ZOO_SAC_PENDULUM)
    model.learn(total_timesteps=steps)
    return model, time.perf_counter() - t0, time.process_time() - c0
