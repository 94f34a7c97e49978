"""Raw ALE against shoal's preprocessed Atari env, in env steps per second.

    python benchmarks/atari_env.py                      # ALE/Pong-v5, 1, 4 and 8 copies
    python benchmarks/atari_env.py --env ALE/Breakout-v5 --steps 4000 --copies 1 4

Random actions (seeded). For each number of copies it prints, in agent steps per second
(one agent step = 4 emulator frames):

* ``raw``: Gymnasium's ``ALE/...`` env with its own frame skip of 4 (no preprocessing),
  in a Gymnasium ``SyncVectorEnv`` when there are several copies;
* ``shoal``: what shoal trains on (``make_vec_env(id, n, mode=sync)``: noop reset, frame
  skip with max-pool, episode stats, life loss, FIRE reset, 84x84 grey, reward clipping,
  4-frame stack, shoal's vector-env checks and episode accounting);
* the ratio shoal / raw.

It also prints the raw emulator's frames per second (frame skip 1), the ceiling of any
Python-side frame skip. Timings use time.perf_counter; each figure is the best of
``--repeats`` runs, so a busy machine disturbs it less.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.envs import make_vec_env  # noqa: E402


def _ale() -> None:
    try:
        import ale_py
    except ImportError:
        sys.exit("this benchmark needs ale-py: pip install 'shoal[atari]'")
    gym.register_envs(ale_py)


def raw_frames_per_s(env_id: str, steps: int, seed: int) -> float:
    """Frames per second of one raw ALE env without frame skip."""
    env = gym.make(env_id, frameskip=1)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    t = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    dt = time.perf_counter() - t
    env.close()
    return steps / dt


def raw_steps_per_s(env_id: str, copies: int, steps: int, seed: int) -> float:
    """Agent steps per second of ``copies`` raw ALE envs (ALE's own frame skip 4) in a SyncVectorEnv."""
    vec = gym.vector.SyncVectorEnv([lambda: gym.make(env_id, frameskip=4)] * copies,
                                   autoreset_mode=AutoresetMode.SAME_STEP)
    vec.reset(seed=seed)
    rng = np.random.default_rng(seed)
    n = int(vec.single_action_space.n)
    t = time.perf_counter()
    for _ in range(steps // copies):
        vec.step(rng.integers(0, n, copies))
    dt = time.perf_counter() - t
    vec.close()
    return (steps // copies) * copies / dt


def shoal_steps_per_s(env_id: str, copies: int, steps: int, seed: int) -> float:
    """Agent steps per second of shoal's preprocessed vector env of ``copies`` copies."""
    venv = make_vec_env(env_id, copies, seed=seed, mode="sync")
    rng = np.random.default_rng(seed)
    n = venv.spec.num_actions
    t = time.perf_counter()
    for _ in range(steps // copies):
        venv.step(rng.integers(0, n, copies))
    dt = time.perf_counter() - t
    venv.close()
    return (steps // copies) * copies / dt


def best(fn, repeats: int, *args) -> float:
    return max(fn(*args) for _ in range(repeats))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="ALE/Pong-v5")
    p.add_argument("--steps", type=int, default=2000, help="agent steps per measurement, all copies together")
    p.add_argument("--copies", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    _ale()
    frames = best(raw_frames_per_s, a.repeats, a.env, 4 * a.steps, a.seed)
    print(f"{a.env}: raw emulator, frame skip 1: {frames:,.0f} frames/s = {frames / 4:,.0f} agent steps/s at skip 4")
    print(f"{'copies':>6}  {'raw steps/s':>12}  {'shoal steps/s':>14}  {'shoal/raw':>9}")
    for c in a.copies:
        raw = best(raw_steps_per_s, a.repeats, a.env, c, a.steps, a.seed)
        ours = best(shoal_steps_per_s, a.repeats, a.env, c, a.steps, a.seed)
        print(f"{c:>6}  {raw:>12,.0f}  {ours:>14,.0f}  {ours / raw:>9.2f}")


if __name__ == "__main__":
    main()
