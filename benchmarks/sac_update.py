"""SAC gradient updates at rl-zoo's Pendulum settings: shoal's learner against Stable-Baselines3's, interleaved.

    python benchmarks/sac_update.py                     # 6 rounds of 200 updates per side
    python benchmarks/sac_update.py --rounds 10 --updates 100

Both sides get the same filled replay buffer (Pendulum-v1 transitions under uniform random
actions) and the settings of ``benchmarks/sac_pendulum.py`` (256x256 ReLU networks, batch
256, twin critics, automatic temperature, Polyak tau 0.005 every update), in one process
with one torch thread, and glibc retaining freed blocks as in a ``shoal train`` process
(``--no-retain-memory``: glibc's defaults, as where user code calls ``shoal.train``).
Each round times ``--updates`` calls of shoal's ``SACLearner.step()`` (replay sampling
included) and then one ``SAC.train(gradient_steps=--updates, batch_size=256)`` (its own
replay sampling included), so load from other processes on the machine falls on both
sides alike. Printed: ms per update of each side per round, the
medians, and the shoal / SB3 ratio. Needs ``pip install 'shoal[bench]'``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import limit_threads  # noqa: E402
from sac_pendulum import ENV_ID, SHOAL_AT_RL_ZOO  # noqa: E402


def transitions(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` Pendulum-v1 transitions under uniform random actions in ``[-1, 1]`` (the networks' scale)."""
    import gymnasium as gym

    env = gym.make(ENV_ID)
    rng = np.random.default_rng(seed)
    space = env.action_space
    assert isinstance(space, gym.spaces.Box) and env.observation_space.shape is not None
    low, high = space.low, space.high
    obs_dim, act_dim = env.observation_space.shape[0], space.shape[0]
    out = {"obs": np.empty((n, obs_dim), np.float32), "action": np.empty((n, act_dim), np.float32),
           "reward": np.empty(n, np.float32), "terminated": np.zeros(n, np.float32),
           "next_obs": np.empty((n, obs_dim), np.float32)}
    obs, _ = env.reset(seed=seed)
    for i in range(n):
        a = rng.uniform(-1.0, 1.0, act_dim).astype(np.float32)
        next_obs, r, term, trunc, _ = env.step(low + (a + 1.0) * 0.5 * (high - low))
        out["obs"][i], out["action"][i], out["reward"][i], out["next_obs"][i] = obs, a, r, next_obs
        out["terminated"][i] = float(term)
        obs = env.reset()[0] if term or trunc else next_obs
    return out


def shoal_learner(data: dict[str, np.ndarray], seed: int) -> Any:
    """shoal's SAC learner at rl-zoo's settings with ``data`` in its replay table."""
    from shoal.agents.continuous.builder import ContinuousBuilder
    from shoal.agents.continuous.config import SACConfig
    from shoal.envs.make import env_spec

    settings: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in SHOAL_AT_RL_ZOO.items()}
    cfg = SACConfig(**settings)
    builder = ContinuousBuilder(cfg, env_spec(ENV_ID), total_steps=20_000, seed=seed)
    tables = builder.make_tables()
    learner = builder.make_learner(builder.make_networks(), tables)
    tables["replay"].insert({"obs": data["obs"], "action": data["action"], "reward": data["reward"],
                             "discount": (cfg.gamma * (1.0 - data["terminated"])).astype(np.float32),
                             "next_obs": data["next_obs"]})
    return learner


def sb3_model(data: dict[str, np.ndarray], seed: int) -> Any:
    """SB3's SAC at rl-zoo's Pendulum settings with ``data`` in its replay buffer."""
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import configure

    from shoal.bench.peers import RL_ZOO_SAC_PENDULUM

    model = SAC("MlpPolicy", gym.make(ENV_ID), seed=seed, device="cpu", verbose=0, **RL_ZOO_SAC_PENDULUM)
    model.set_logger(configure(None, []))
    buf, n = model.replay_buffer, len(data["reward"])
    assert buf is not None
    buf.observations[:n, 0] = data["obs"]
    buf.next_observations[:n, 0] = data["next_obs"]
    buf.actions[:n, 0] = data["action"]
    buf.rewards[:n, 0] = data["reward"]
    buf.dones[:n, 0] = data["terminated"]
    buf.pos = n
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (shoal, then SB3)")
    parser.add_argument("--updates", type=int, default=200, help="gradient updates per side per round")
    parser.add_argument("--transitions", type=int, default=5000, help="transitions in both replay buffers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both sides)")
    parser.add_argument("--only", choices=["shoal", "sb3"], help="time one side only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-retain-memory", action="store_true",
                        help="leave glibc's malloc at its defaults (the process of shoal.train called from user code) "
                             "instead of retaining freed blocks, as `shoal train` and shoal's own learner processes do")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    if not args.no_retain_memory:
        from shoal.core.memory import retain_freed_memory

        retain_freed_memory()  # the process setting of `shoal train`, for both sides
    data = transitions(args.transitions, args.seed)
    sides: dict[str, Any] = {}
    if args.only != "sb3":
        learner = shoal_learner(data, args.seed)
        sides["shoal"] = lambda n: [learner.step() for _ in range(n)]
    if args.only != "shoal":
        model = sb3_model(data, args.seed)
        sides["sb3"] = lambda n: model.train(gradient_steps=n, batch_size=256)
    for run in sides.values():  # warm-up: first-call costs and allocator growth
        run(20)
    print(f"SAC updates at rl-zoo's Pendulum settings, {args.threads} torch thread(s), {args.rounds} rounds of "
          f"{args.updates} updates per side, {args.transitions} transitions in replay, freed memory "
          f"{'left to glibc' if args.no_retain_memory else 'retained (as in `shoal train`)'}", flush=True)
    times: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.rounds):
        line = [f"round {r}:"]
        for name, run in sides.items():
            t0 = time.perf_counter()
            run(args.updates)
            times[name].append((time.perf_counter() - t0) / args.updates * 1e3)
            line.append(f"{name} {times[name][-1]:6.2f} ms/update")
        if len(sides) == 2:
            line.append(f"ratio {times['shoal'][-1] / times['sb3'][-1]:.3f}x")
        print("  ".join(line), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print("median: " + "  ".join(f"{k} {v:.2f} ms/update" for k, v in med.items()))
    if len(sides) == 2:
        per_round = statistics.median(s / b for s, b in zip(times["shoal"], times["sb3"]))
        print(f"ratio shoal / SB3: {med['shoal'] / med['sb3']:.3f}x (median of per-round ratios {per_round:.3f}x)")


if __name__ == "__main__":
    main()
