"""shoal: reinforcement learning at every scale, one algorithm definition from laptop to cluster."""

from __future__ import annotations

from typing import Any

from shoal.envs.registration import register_envs

__version__ = "0.1.0"

# Like any Gymnasium env package, importing shoal registers its ids (shoal/GridMaze-v0,
# shoal/CartPole-v1, ...); only gymnasium is imported for it, no env code and no torch.
register_envs()


def train(algo: str | None = None, env: Any = None, **kwargs: Any):
    """Train an algorithm and return the :class:`shoal.run.runner.Run`.

    Example: ``shoal.train("ppo", env="CartPole-v1", steps=100_000)``. Keyword
    arguments: ``steps, seed, run_dir, backend, num_actors, num_learners, config, overrides, resume,
    ray_address, quiet``; algorithm settings go in ``overrides={"lr": 1e-3}``.
    """
    from shoal.run.runner import train as _train

    return _train(algo, env, **kwargs)


__all__ = ["train", "__version__"]
