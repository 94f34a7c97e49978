"""shoal: reinforcement learning at every scale, one algorithm definition from laptop to cluster."""

from __future__ import annotations

from typing import Any

import torch.distributions

__version__ = "0.1.0"

# Argument validation in torch.distributions costs more than the math for small nets.
torch.distributions.Distribution.set_default_validate_args(False)


def train(algo: str | None = None, env: Any = None, **kwargs: Any):
    """Train an algorithm and return the :class:`shoal.run.runner.Run`.

    Example: ``shoal.train("ppo", env="CartPole-v1", steps=100_000)``. Keyword
    arguments: ``steps, seed, run_dir, backend, num_actors, config, overrides, resume,
    ray_address, quiet``; algorithm settings go in ``overrides={"lr": 1e-3}``.
    """
    from shoal.run.runner import train as _train

    return _train(algo, env, **kwargs)


__all__ = ["train", "__version__"]
