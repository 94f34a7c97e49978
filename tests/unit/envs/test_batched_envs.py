"""shoal's numpy-batched classic-control envs against Gymnasium's own, step for step.

Each env runs 10k steps (Acrobot 5k) x 8 copies beside a ``SyncVectorEnv`` of ``gym.make(id)``
copies in same-step autoreset mode, with the same seed and actions; half of the
copies follow a simple controller (so episodes also end by termination or by
truncation, whichever random play never reaches) and half act at random.
"""

from __future__ import annotations

import importlib
import time
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import shoal.envs.batched as batched
from shoal.envs.batched import BATCHED_IDS, BatchedCartPole, make_batched
from shoal.errors import EnvError

N = 8
STEPS = 10_000
# Gymnasium's Acrobot integrates RK4 in Python (~80 us per copy-step): half the steps keep
# this file under 20 s and still cross 10 time limits and dozens of terminations per copy.
STEPS_FOR = {"Acrobot-v1": 5_000}
SEED = 11


def _policy(gym_id: str, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Actions for N copies: copies [0, N/2) mostly follow a controller, the rest act at random."""
    n = obs.shape[0]
    ctrl = (np.arange(n) < n // 2) & (rng.random(n) > 0.1)
    if gym_id == "CartPole-v1":  # balances for the full 500 steps: exercises truncation
        return np.where(ctrl, (obs[:, 2] + 0.3 * obs[:, 3] > 0).astype(np.int64), rng.integers(0, 2, n))
    if gym_id == "MountainCar-v0":  # pump energy: reaches the flag
        return np.where(ctrl, np.where(obs[:, 1] >= 0, 2, 0), rng.integers(0, 3, n))
    if gym_id == "Acrobot-v1":  # torque with the elbow's swing: reaches the line
        return np.where(ctrl, np.where(obs[:, 5] >= 0, 2, 0), rng.integers(0, 3, n))
    if gym_id == "MountainCarContinuous-v0":  # +-1 exactly, inside and beyond the clip bounds
        push = np.where(obs[:, 1] >= 0, 1.0, -1.0) * rng.choice([1.0, 1.5, 0.7], n)
        return np.where(ctrl, push, rng.uniform(-1.6, 1.6, n))[:, None].astype(np.float32)
    assert gym_id == "Pendulum-v1"  # beyond the torque bounds too
    return rng.uniform(-2.5, 2.5, (n, 1)).astype(np.float32)


def _reference(gym_id: str) -> SyncVectorEnv:
    return SyncVectorEnv([lambda: gym.make(gym_id) for _ in range(N)], autoreset_mode=AutoresetMode.SAME_STEP)


def _record(log: dict[str, list[np.ndarray]], step: tuple) -> None:
    obs, reward, terminated, truncated, info = step
    done = terminated | truncated
    log["obs"].append(obs.copy())
    log["reward"].append(reward.copy())
    log["terminated"].append(terminated.copy())
    log["truncated"].append(truncated.copy())
    log["mask"].append(np.asarray(info.get("_final_obs", np.zeros_like(done))).copy())
    if done.any():  # Gymnasium's final_obs is an object array; ours is dense
        log["final_obs"].append(np.stack(list(info["final_obs"][done])))


def _assert_same(name: str, got: list[np.ndarray], want: list[np.ndarray], **tol: float) -> None:
    """Compare recorded arrays (leading axis: step), naming the first step that differs."""
    g, w = np.stack(got), np.stack(want)
    try:
        if tol:
            np.testing.assert_allclose(g, w, **tol)
        else:
            np.testing.assert_array_equal(g, w)
    except AssertionError:
        bad = ~np.isclose(g, w, **tol) if tol else g != w
        step = int(np.flatnonzero(bad.reshape(len(g), -1).any(axis=1))[0])
        raise AssertionError(f"{name} differs first at step {step}: got {g[step]}, want {w[step]}") from None


@pytest.mark.parametrize("gym_id", list(BATCHED_IDS))
def test_matches_gymnasium_step_for_step(gym_id: str) -> None:
    ref, env = _reference(gym_id), make_batched(gym_id, N)
    ref_obs, _ = ref.reset(seed=SEED)
    obs, _ = env.reset(seed=SEED)
    np.testing.assert_array_equal(obs, ref_obs)
    rng = np.random.default_rng(0)
    got: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "reward", "terminated", "truncated", "mask", "final_obs")}
    want: dict[str, list[np.ndarray]] = {k: [] for k in got}
    for _ in range(STEPS_FOR.get(gym_id, STEPS)):  # record everything, compare once at the end: keeps the test fast
        actions = _policy(gym_id, obs, rng)
        _record(want, ref.step(actions))
        step = env.step(actions)
        _record(got, step)
        obs = step[0]
        assert step[4]["final_obs"].shape == obs.shape and step[4]["final_obs"].dtype == np.float32
    for key in ("obs", "terminated", "truncated", "mask"):
        _assert_same(key, got[key], want[key])
    _assert_same("final_obs", [np.concatenate(got["final_obs"])], [np.concatenate(want["final_obs"])])
    if gym_id == "Pendulum-v1":  # Gymnasium's u**2 is libm powf: at worst one float32 ulp apart
        _assert_same("reward", got["reward"], want["reward"], rtol=1e-7, atol=1e-9)
    else:
        _assert_same("reward", got["reward"], want["reward"])
    # The comparison must have crossed the episode ends this env can have.
    assert np.sum(want["truncated"]) > 0
    if gym_id != "Pendulum-v1":
        assert np.sum(want["terminated"]) > 0


@pytest.mark.parametrize("gym_id", list(BATCHED_IDS))
def test_many_copies_shapes_and_dtypes(gym_id: str) -> None:
    n = 1024
    env = make_batched(gym_id, n, seed=0)
    obs_shape = env.single_observation_space.shape
    obs, info = env.reset()
    assert obs.shape == (n, *obs_shape) and obs.dtype == np.float32 and obs.flags.c_contiguous
    assert env.observation_space.shape == (n, *obs_shape) and env.action_space.shape[0] == n
    for _ in range(3):
        obs, rew, term, trunc, info = env.step(env.action_space.sample())
        assert obs.shape == (n, *obs_shape) and obs.dtype == np.float32
        assert rew.shape == (n,) and rew.dtype == np.float64
        assert term.shape == trunc.shape == (n,) and term.dtype == trunc.dtype == np.bool_
        assert info["final_obs"].shape == obs.shape and info["final_obs"].dtype == np.float32
        assert info["_final_obs"].shape == (n,) and info["_final_obs"].dtype == np.bool_
        assert set(info) == {"final_obs", "_final_obs"}
        assert env.observation_space.contains(obs) or gym_id == "CartPole-v1"  # CartPole obs leave the box


def _best_step_time(n: int, steps: int = 200) -> float:
    env = BatchedCartPole(n, seed=0)
    env.reset()
    actions = [env.action_space.sample() for _ in range(16)]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for i in range(steps):
            env.step(actions[i % 16])
        best = min(best, time.perf_counter() - start)
    return best / steps


def test_step_cost_does_not_grow_per_copy() -> None:
    # 128x the copies (with ~45 resets per step) must cost far less than 128x the time:
    # a Python loop over copies would make this ratio ~100; numpy keeps it near 3.
    ratio = _best_step_time(1024) / _best_step_time(8)
    assert ratio < 20, f"a step of 1024 copies costs {ratio:.1f}x a step of 8 copies"


def test_seeding_is_reproducible_and_per_copy() -> None:
    def rollout(env: batched.BatchedVectorEnv, **reset_kwargs: object) -> np.ndarray:
        rng = np.random.default_rng(5)
        out = [env.reset(**reset_kwargs)[0]]
        for _ in range(300):  # ~13 CartPole episodes per copy: several auto-resets
            out.append(env.step(rng.integers(0, 2, N))[0])
        return np.stack(out)

    a = rollout(make_batched("CartPole-v1", N), seed=3)
    np.testing.assert_array_equal(a, rollout(make_batched("CartPole-v1", N), seed=3))
    # make_batched's seed is the first reset's seed; a list of seeds gives one per copy.
    np.testing.assert_array_equal(a, rollout(make_batched("CartPole-v1", N, seed=3)))
    np.testing.assert_array_equal(a, rollout(make_batched("CartPole-v1", N), seed=[3 + i for i in range(N)]))
    assert not np.array_equal(a, rollout(make_batched("CartPole-v1", N), seed=4))
    # Copy i with seed s starts like gym.make(id).reset(seed=s + i).
    single = gym.make("CartPole-v1")
    for i in range(N):
        np.testing.assert_array_equal(a[0, i], single.reset(seed=3 + i)[0])


@pytest.mark.parametrize("gym_id", list(BATCHED_IDS))
def test_unseeded_resets_and_reset_mask_follow_gymnasium(gym_id: str) -> None:
    ref, env = _reference(gym_id), make_batched(gym_id, N)
    np.testing.assert_array_equal(env.reset(seed=2)[0], ref.reset(seed=2)[0])
    for _ in range(40):  # later resets continue each copy's own generator
        np.testing.assert_array_equal(env.reset()[0], ref.reset()[0])
    actions = _policy(gym_id, env.reset()[0], np.random.default_rng(1))
    ref.reset()
    np.testing.assert_array_equal(env.step(actions)[0], ref.step(actions)[0])
    mask = np.arange(N) % 3 == 0
    np.testing.assert_array_equal(
        env.reset(seed=9, options={"reset_mask": mask.copy()})[0],
        ref.reset(seed=9, options={"reset_mask": mask.copy()})[0],
    )
    np.testing.assert_array_equal(env.step(actions)[0], ref.step(actions)[0])


@pytest.mark.parametrize("gym_id", ["CartPole-v1", "MountainCar-v0", "Acrobot-v1"])
def test_reset_bounds_option(gym_id: str) -> None:
    ref, env = _reference(gym_id), make_batched(gym_id, N)
    options = {"low": -0.02, "high": 0.03} if gym_id != "MountainCar-v0" else {"low": -0.5, "high": -0.45}
    np.testing.assert_array_equal(env.reset(seed=1, options=options)[0], ref.reset(seed=1, options=options)[0])


def test_pendulum_init_option() -> None:
    ref, env = _reference("Pendulum-v1"), make_batched("Pendulum-v1", N)
    options = {"x_init": 0.5, "y_init": 0.25}
    np.testing.assert_array_equal(env.reset(seed=1, options=options)[0], ref.reset(seed=1, options=options)[0])


def test_registration_and_make_vec() -> None:
    assert BATCHED_IDS["CartPole-v1"] == "shoal/CartPole-v1" and len(BATCHED_IDS) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second registration would warn
        importlib.reload(batched)
    for gym_id, shoal_id in BATCHED_IDS.items():
        vec = gym.make_vec(shoal_id, num_envs=3, vectorization_mode="vector_entry_point")
        assert vec.num_envs == 3 and vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        assert vec.max_episode_steps == gym.spec(gym_id).max_episode_steps
        assert type(vec).__name__ == type(make_batched(shoal_id, 1)).__name__
        single = gym.make(shoal_id)
        assert type(single.unwrapped) is type(gym.make(gym_id).unwrapped)
        np.testing.assert_array_equal(single.reset(seed=4)[0], vec.reset(seed=4)[0][0])


def test_errors_are_one_line_env_errors() -> None:
    env = make_batched("CartPole-v1", 4)
    with pytest.raises(EnvError, match="before reset"):
        env.step(np.zeros(4, dtype=np.int64))
    env.reset(seed=0)
    with pytest.raises(EnvError, match="shape"):
        env.step(np.zeros(5, dtype=np.int64))
    with pytest.raises(EnvError, match="integer"):
        env.step(np.zeros(4, dtype=np.float32))
    with pytest.raises(EnvError, match="shape"):
        _pendulum_bad_step()
    with pytest.raises(EnvError, match="no batched env"):
        make_batched("LunarLander-v3", 4)
    with pytest.raises(EnvError, match="seeds"):
        env.reset(seed=[1, 2])
    with pytest.raises(EnvError, match="num_envs"):
        make_batched("CartPole-v1", 0)


def _pendulum_bad_step() -> None:
    env = make_batched("Pendulum-v1", 4, seed=0)
    env.reset()
    env.step(np.zeros(4, dtype=np.float32))  # needs [4, 1]
