"""Training from datasets: the env and settings an offline run takes from its dataset, and the Python API.

``shoal train bc|cql|offline_dqn|offline_sac --dataset DATASET [--env ENV]`` runs through
the ordinary runner on the ``offline`` topology (:mod:`shoal.topologies.offline`): the run
directory, ``config.yaml`` (the dataset's resolved folder in ``agent.dataset``), checkpoints,
``metrics.csv``, TensorBoard and ``eval.json`` are those of any run; ``steps`` counts learner
updates. The env, used only for evaluation, is the one in the dataset's env spec unless
``--env`` names another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoal.data.offline import dataset_data_path, dataset_env_id
from shoal.errors import ConfigError

#: The algorithms that learn from a dataset.
OFFLINE_ALGORITHMS = ("bc", "cql", "offline_dqn", "offline_sac")


def offline_settings(algo: str | None, dataset: str | None, env: Any,
                     overrides: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(env, overrides)`` for a train command with ``--dataset``: the env defaults to the dataset's, and
    ``dataset`` (the dataset's folder, absolute, so a run keeps finding it) joins the overrides.

    ``dataset`` may also come as a ``dataset=...`` override. A dataset for an online algorithm is
    a ConfigError (an offline algorithm without one fails when its learner is built).
    """
    dataset = dataset if dataset is not None else overrides.get("dataset")
    if not dataset:
        return env, overrides
    if algo is not None and algo not in OFFLINE_ALGORITHMS:
        raise ConfigError(f"--dataset applies to the offline algorithms ({', '.join(OFFLINE_ALGORITHMS)}), "
                          f"not {algo!r}; drop --dataset or pick one of them")
    folder = dataset_data_path(str(dataset)).parent.resolve()
    return env or dataset_env_id(folder), {**overrides, "dataset": str(folder)}


def train_offline(algo: str, dataset: str | Path, env: str | None = None, **kwargs: Any) -> Any:
    """Train ``algo`` (bc, cql, offline_dqn, offline_sac) on ``dataset``; the rest as :func:`shoal.run.runner.train`."""
    from shoal.run.runner import train

    if algo not in OFFLINE_ALGORITHMS:
        raise ConfigError(f"{algo!r} is not an offline algorithm; use one of {', '.join(OFFLINE_ALGORITHMS)}")
    env_id, overrides = offline_settings(algo, str(dataset), env, dict(kwargs.pop("overrides", None) or {}))
    return train(algo, env_id, overrides=overrides, **kwargs)
