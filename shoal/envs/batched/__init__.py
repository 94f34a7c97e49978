"""Numpy-batched classic-control envs: Gymnasium 1.4's dynamics, N copies per call, same-step autoreset.

Importing this package registers ``shoal/CartPole-v1``, ``shoal/Pendulum-v1``,
``shoal/MountainCar-v0``, ``shoal/MountainCarContinuous-v0`` and ``shoal/Acrobot-v1``
with Gymnasium (idempotently). ``gym.make_vec(id, num_envs=N,
vectorization_mode="vector_entry_point")`` gives the batched env;
``gym.make(id)`` gives the plain single Gymnasium env.
"""

from __future__ import annotations

import gymnasium as gym

from shoal.envs.batched.acrobot import BatchedAcrobot
from shoal.envs.batched.base import BatchedVectorEnv
from shoal.envs.batched.cartpole import BatchedCartPole
from shoal.envs.batched.continuous_mountain_car import BatchedMountainCarContinuous
from shoal.envs.batched.mountain_car import BatchedMountainCar
from shoal.envs.batched.pendulum import BatchedPendulum
from shoal.errors import EnvError

_CLASSES: dict[str, type[BatchedVectorEnv]] = {
    cls.gym_id: cls
    for cls in (BatchedCartPole, BatchedPendulum, BatchedMountainCar, BatchedMountainCarContinuous, BatchedAcrobot)
}

#: Gymnasium id -> the shoal id of its batched twin.
BATCHED_IDS: dict[str, str] = {gym_id: f"shoal/{gym_id}" for gym_id in _CLASSES}


def _register() -> None:
    """Register every shoal id once; a second import (or reload) leaves the registry as it is."""
    for gym_id, shoal_id in BATCHED_IDS.items():
        if shoal_id in gym.registry:
            continue
        cls = _CLASSES[gym_id]
        single = gym.spec(gym_id)
        gym.register(
            id=shoal_id,
            entry_point=single.entry_point,  # gym.make(shoal_id) == gym.make(gym_id), same wrappers
            vector_entry_point=f"{cls.__module__}:{cls.__name__}",
            max_episode_steps=single.max_episode_steps,
            reward_threshold=single.reward_threshold,
        )


def make_batched(env_id: str, num_envs: int, seed: int | None = None) -> BatchedVectorEnv:
    """A batched env of ``num_envs`` copies for a Gymnasium or shoal id; ``seed`` seeds copy i with seed + i.

    With a seed, the first ``reset()`` equals ``reset(seed=seed)``.
    """
    gym_id = env_id.removeprefix("shoal/")
    cls = _CLASSES.get(gym_id)
    if cls is None:
        raise EnvError(
            f"no batched env for {env_id!r}; batched ids are {sorted(BATCHED_IDS.values())} "
            "(or use a sync vector env for other ids)"
        )
    return cls(num_envs=num_envs, seed=seed)


_register()

__all__ = [
    "BATCHED_IDS",
    "BatchedAcrobot",
    "BatchedCartPole",
    "BatchedMountainCar",
    "BatchedMountainCarContinuous",
    "BatchedPendulum",
    "BatchedVectorEnv",
    "make_batched",
]
