"""Registering shoal's Gymnasium ids, cheaply: entry points are strings, nothing is built.

``import shoal`` calls :func:`register_envs`, as Gymnasium packages do, so that
``gym.make("shoal/GridMaze-v0")`` works after ``import shoal``. Only Gymnasium itself is
imported here (no numpy env code, no torch): the env classes load when an env is made.
"""

from __future__ import annotations

import gymnasium as gym

#: shoal's toy ids -> (entry point, max episode steps).
TOY_IDS: dict[str, tuple[str, int]] = {
    "shoal/Treasure1D-v0": ("shoal.envs.toy.treasure:Treasure1D", 100),
    "shoal/GridMaze-v0": ("shoal.envs.toy.maze:GridMaze", 100),
    # No time limit in the book; 10,000 steps is far beyond its 3,000-step experiment.
    "shoal/BlockingMaze-v0": ("shoal.envs.toy.blocking_maze:BlockingMaze", 10_000),
    # The same maze with its wall already moved: where a run past the move is evaluated.
    "shoal/BlockingMazeMoved-v0": ("shoal.envs.toy.blocking_maze:blocking_maze_moved", 10_000),
    # h-DQN's six-state chain (Kulkarni et al. 2016), cut at 100 steps.
    "shoal/StochasticDecision-v0": ("shoal.envs.toy.stochastic_decision:StochasticDecision", 100),
}

#: Gymnasium id -> vector entry point of its numpy-batched twin ``shoal/<id>``
#: (``tests/unit/test_env_registration.py`` checks it against ``shoal.envs.batched``).
BATCHED_ENTRY_POINTS: dict[str, str] = {
    "CartPole-v1": "shoal.envs.batched.cartpole:BatchedCartPole",
    "Pendulum-v1": "shoal.envs.batched.pendulum:BatchedPendulum",
    "MountainCar-v0": "shoal.envs.batched.mountain_car:BatchedMountainCar",
    "MountainCarContinuous-v0": "shoal.envs.batched.continuous_mountain_car:BatchedMountainCarContinuous",
    "Acrobot-v1": "shoal.envs.batched.acrobot:BatchedAcrobot",
}


#: Partially observed twins of classic-control envs: id -> (entry point, vector entry point, max steps,
#: reward threshold). ``make_vec_env`` uses the numpy-batched vector entry point for them.
PARTIAL_IDS: dict[str, tuple[str, str, int, float]] = {
    "shoal/CartPoleNoVel-v1": ("shoal.envs.partial:CartPoleNoVel", "shoal.envs.batched.cartpole:BatchedCartPoleNoVel",
                               500, 475.0),
}

#: Slow simulators: CartPole-v1 (its own 500-step limit inside) waiting in every step.
SLOW_IDS: dict[str, str] = {"shoal/SlowCartPole-v0": "shoal.envs.slow:slow_cartpole"}


def register_envs() -> None:
    """Register every ``shoal/`` id with Gymnasium; ids already registered are left as they are."""
    for env_id, (entry_point, max_steps) in TOY_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)
    for env_id, (entry_point, vector_entry_point, max_steps, threshold) in PARTIAL_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point,
                         max_episode_steps=max_steps, reward_threshold=threshold)
    for env_id, entry_point in SLOW_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)
    for gym_id, vector_entry_point in BATCHED_ENTRY_POINTS.items():
        shoal_id = f"shoal/{gym_id}"
        if shoal_id in gym.registry:
            continue
        single = gym.spec(gym_id)
        gym.register(
            id=shoal_id,
            entry_point=single.entry_point,  # gym.make(shoal_id) == gym.make(gym_id), same wrappers
            vector_entry_point=vector_entry_point,
            max_episode_steps=single.max_episode_steps,
            reward_threshold=single.reward_threshold,
        )
