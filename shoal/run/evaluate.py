"""Evaluating a policy: N episodes on freshly seeded env copies, deterministic actions."""

from __future__ import annotations

from typing import Any

import numpy as np

from shoal.core.interfaces import Policy
from shoal.envs import make_vec_env


def evaluation_env_id(env_id: str) -> str:
    """Evaluate on Gymnasium's own env when training used a shoal batched copy of it."""
    if env_id.startswith("shoal/"):
        try:
            from shoal.envs.batched import BATCHED_IDS

            for gym_id, shoal_id in BATCHED_IDS.items():
                if shoal_id == env_id:
                    return gym_id
        except ImportError:
            pass
    return env_id


def evaluation_env(env: Any) -> Any:
    """The env to evaluate on: for Atari (an ``ALE/`` id or an ``AtariEnv``) the full game with its real rewards.

    Evaluation keeps the training preprocessing (frames, skip, stack) but neither ends an
    episode at a lost life nor clips rewards, so its returns are game scores.
    """
    if isinstance(env, str) and env.startswith("ALE/"):
        from shoal.envs.atari import AtariEnv

        return AtariEnv(env).for_evaluation()
    for_evaluation = getattr(env, "for_evaluation", None)
    return for_evaluation() if callable(for_evaluation) else env


def evaluate(policy: Policy, env, episodes: int = 20, seed: int = 10_000, action_bounds=None,
             max_steps: int = 10_000) -> dict:
    """Run ``episodes`` episodes, one per env copy (copy i seeded ``seed + i``), and summarise them.

    Returns are the env's own over its real episode (see :func:`evaluation_env` and the
    ``VecEnv`` episode reports): game scores on Atari. An episode still running after
    ``max_steps`` steps (an env with no time limit and a policy that loops) is cut there and
    counted with the rewards it has; ``truncated_episodes`` says how many were.
    """
    venv = make_vec_env(evaluation_env(env), episodes, seed=seed, mode="sync")
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, np.int64)
    finished = np.zeros(episodes, bool)
    running = np.zeros(episodes)  # rewards so far, for episodes cut at max_steps
    steps = np.zeros(episodes, np.int64)
    obs = venv.obs
    try:
        for _ in range(max_steps):
            action = policy(obs)
            if action_bounds is not None:
                action = np.clip(action, *action_bounds)
            step = venv.step(action)
            running += step.reward
            steps += 1
            ended = step.extras.get("episodes")
            if ended is not None:
                first = ~finished[ended.index]  # each copy counts its first episode only
                idx = ended.index[first]
                returns[idx], lengths[idx] = ended.returns[first], ended.lengths[first]
                finished[idx] = True
            if finished.all():
                break
            obs = step.next_obs
    finally:
        venv.close()
    returns[~finished], lengths[~finished] = running[~finished], steps[~finished]
    return {"mean_return": float(returns.mean()), "std_return": float(returns.std()),
            "truncated_episodes": int((~finished).sum()),
            "min_return": float(returns.min()), "max_return": float(returns.max()),
            "mean_length": float(lengths.mean()), "episodes": int(episodes), "seed": int(seed),
            "returns": returns.tolist()}
