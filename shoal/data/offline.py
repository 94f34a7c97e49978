"""Offline datasets: reading Minari datasets into flat transitions and replay tables.

A dataset is named by a Minari id (``shoal/cartpole-eps0.3-v0``, looked up under
``MINARI_DATASETS_PATH`` or Minari's default ``~/.minari/datasets``) or by a path: the
dataset's folder (the one holding ``data/``) or its ``data/`` folder itself. Any dataset
Minari wrote loads, not only those ``shoal record`` writes.

An episode of ``T`` steps has ``T + 1`` observations; its transitions are
``(obs[t], action[t], reward[t], obs[t + 1], terminated[t], truncated[t])``. A step that
ended the episode by truncation keeps ``obs[t + 1]`` (the observation the time limit cut
at), so a learner bootstraps from it; a terminated one is not bootstrapped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shoal.data.table import ReplayTable
from shoal.errors import ConfigError

#: A Minari dataset id: ``[namespace/]name-vN``.
DATASET_ID = re.compile(r"^(?:[\w.\-]+/)*[\w.\-]+-v\d+$")


def import_minari() -> Any:
    """The ``minari`` module, or a ConfigError saying how to install it."""
    try:
        import minari
    except ImportError:
        raise ConfigError("offline datasets need Minari; install it with pip install 'shoal[offline]'") from None
    return minari


def datasets_root() -> Path:
    """Where Minari keeps datasets by id: ``MINARI_DATASETS_PATH``, else ``~/.minari/datasets``."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def is_dataset_id(ref: str) -> bool:
    """Whether ``ref`` reads as a Minari dataset id (``name-vN``, optionally namespaced) rather than a path."""
    return bool(DATASET_ID.match(ref)) and not ref.startswith((".", "/", "~"))


def dataset_data_path(ref: str | os.PathLike[str]) -> Path:
    """The ``data/`` folder of the dataset ``ref`` (an id or a path); a ConfigError if there is none."""
    text = os.fspath(ref)
    candidates = [Path(text).expanduser()]
    if is_dataset_id(text):
        candidates.append(datasets_root() / text)
    for base in candidates:
        for data in (base / "data", base):
            if (data / "metadata.json").is_file():
                return data
    where = f" (nor under {datasets_root()})" if is_dataset_id(text) else ""
    raise ConfigError(f"no Minari dataset at {text!r}{where}; pass a dataset id or folder written by `shoal record` "
                      "or Minari, or set MINARI_DATASETS_PATH to the folder that holds it")


def open_dataset(ref: str | os.PathLike[str]) -> Any:
    """The :class:`minari.MinariDataset` named by ``ref`` (an id or a path)."""
    minari = import_minari()
    data = dataset_data_path(ref)
    try:
        return minari.MinariDataset(data)
    except (ValueError, KeyError, OSError) as e:
        raise ConfigError(f"cannot read the Minari dataset at {str(data)!r} ({type(e).__name__}: {e}); "
                          "check that it was written completely by Minari") from None


def dataset_env_id(ref: str | os.PathLike[str]) -> str:
    """The Gymnasium id of the env the dataset was recorded on (from its env spec); ConfigError if it has none."""
    spec = open_dataset(ref).env_spec
    if spec is None:
        raise ConfigError(f"dataset {os.fspath(ref)!r} records no env spec; pass the env to evaluate on with --env ID")
    return str(spec.id)


def shoal_metadata(ref: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``shoal`` section of a dataset's metadata (source run, noise settings); empty for other datasets."""
    meta = open_dataset(ref).storage.metadata
    out = meta.get("shoal", {})
    return dict(out) if isinstance(out, dict) else {}


@dataclass
class Transitions:
    """Flat transitions of whole episodes, each field with a leading item axis."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    episode: np.ndarray
    """The dataset episode id each transition comes from."""

    def __len__(self) -> int:
        return len(self.reward)

    def subset(self, mask: np.ndarray) -> "Transitions":
        """The transitions where ``mask`` is true."""
        return Transitions(self.obs[mask], self.action[mask], self.reward[mask], self.next_obs[mask],
                           self.terminated[mask], self.truncated[mask], self.episode[mask])

    def items(self, gamma: float) -> dict[str, np.ndarray]:
        """Replay items in the learners' one-step form: ``discount = gamma * (1 - terminated)``."""
        return {"obs": self.obs, "action": self.action, "reward": self.reward.astype(np.float32),
                "discount": (gamma * (1.0 - self.terminated.astype(np.float32))).astype(np.float32),
                "next_obs": self.next_obs}


def load_transitions(ref: str | os.PathLike[str], dtype: Any = np.float32) -> Transitions:
    """Every episode of dataset ``ref`` as flat transitions (observations cast to ``dtype``).

    Only array observations and actions (Box, Discrete) are read; dict or tuple spaces are
    refused with a ConfigError.
    """
    ds = open_dataset(ref)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated",
                                                          "truncated", "episode")}
    for ep in ds.iterate_episodes():
        if not isinstance(ep.observations, np.ndarray) or not isinstance(ep.actions, np.ndarray):
            raise ConfigError(f"dataset {os.fspath(ref)!r} has dict or tuple observations or actions; shoal's offline "
                              "learners take array (Box or Discrete) spaces")
        n = len(ep.rewards)
        obs = np.asarray(ep.observations, dtype=dtype)
        parts["obs"].append(obs[:n])
        parts["next_obs"].append(obs[1:n + 1])
        parts["action"].append(np.asarray(ep.actions)[:n])
        parts["reward"].append(np.asarray(ep.rewards, dtype=np.float32))
        parts["terminated"].append(np.asarray(ep.terminations, dtype=bool))
        parts["truncated"].append(np.asarray(ep.truncations, dtype=bool))
        parts["episode"].append(np.full(n, ep.id, dtype=np.int64))
    if not parts["reward"] or sum(len(r) for r in parts["reward"]) == 0:
        raise ConfigError(f"dataset {os.fspath(ref)!r} holds no transitions; record some episodes first")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    action = cat["action"]
    if np.issubdtype(action.dtype, np.integer):
        action = action.astype(np.int64).reshape(len(action))
    else:
        action = action.astype(np.float32)
    return Transitions(cat["obs"], action, cat["reward"], cat["next_obs"], cat["terminated"], cat["truncated"],
                       cat["episode"])


def split_episodes(data: Transitions, validation: float, seed: int = 0) -> tuple[Transitions, Transitions | None]:
    """``(train, validation)``: a ``validation`` fraction of whole episodes (at least one) held out, chosen by ``seed``.

    With ``validation == 0`` the second value is None. Whole episodes, not single steps, are
    held out, so neighbouring (nearly equal) steps never sit on both sides.
    """
    if not 0.0 <= validation < 1.0:
        raise ConfigError(f"the validation fraction must be in [0, 1), got {validation}")
    if validation == 0.0:
        return data, None
    episodes = np.unique(data.episode)
    if len(episodes) < 2:
        raise ConfigError(f"a validation split needs at least 2 episodes, the dataset has {len(episodes)}; "
                          "record more episodes or set validation=0")
    rng = np.random.default_rng(seed)
    k = min(len(episodes) - 1, max(1, int(round(validation * len(episodes)))))
    held = rng.choice(episodes, size=k, replace=False)
    mask = np.isin(data.episode, held)
    return data.subset(~mask), data.subset(mask)


def transitions_table(data: Transitions, gamma: float, seed: int = 0, min_size: int = 1) -> ReplayTable:
    """A uniform :class:`ReplayTable` holding exactly ``data`` (one-step items, see :meth:`Transitions.items`)."""
    table = ReplayTable.uniform(len(data), min_size=min(min_size, len(data)), seed=seed, name="dataset")
    table.insert(data.items(gamma))
    return table
