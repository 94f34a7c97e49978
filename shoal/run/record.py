"""``shoal record``: play a trained run's greedy policy and write the episodes as a Minari dataset.

Exploration is added on top of the greedy policy so the data covers more than the
policy's own states: ``epsilon`` (discrete actions) replaces the action by a uniformly
random one with that probability; ``action_noise`` (continuous actions) adds Gaussian
noise of std ``action_noise * (high - low) / 2`` per dimension, so ``sigma`` is in the
units of actions rescaled to ``[-1, 1]``, and clips to the bounds. Both settings, the
source run and its checkpoint go into the dataset's metadata (key ``shoal``).

The dataset is written into a temporary folder beside its destination and moved there
whole once Minari has finished, so a failed or interrupted recording leaves nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from shoal.data.offline import datasets_root, import_minari, is_dataset_id
from shoal.envs.make import env_spec
from shoal.errors import ConfigError


@dataclass
class Recording:
    """What :func:`record_dataset` wrote."""

    path: Path
    dataset_id: str
    episodes: int
    steps: int
    returns: list[float]


def _destination(out: str) -> tuple[str, Path]:
    """``(Minari dataset id, folder)`` for ``--out``: an id goes under the Minari root, a path is the folder itself.

    Minari's ids allow only letters, digits, ``_`` and ``-`` in a name; other characters of
    the name asked for (the ``.`` of ``eps0.3``) become ``_`` in the id stored in the
    metadata, while the folder keeps the name asked for, so loading by that name works.
    """
    if is_dataset_id(out) and not Path(out).exists():
        name, dest = out, datasets_root() / out
    else:
        dest = Path(out).expanduser()
        name = "shoal/" + (dest.name if is_dataset_id(dest.name) else f"{dest.name}-v0")
    return re.sub(r"[^-\w/]", "_", name), dest.resolve()  # absolute: Minari mixes relative roots up


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    """Point Minari at ``root`` while it writes (it reads ``MINARI_DATASETS_PATH`` at each call)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _check(episodes: int, epsilon: float, action_noise: float, discrete: bool, env_id: str) -> None:
    if episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {episodes}")
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"--epsilon must be in [0, 1], got {epsilon}")
    if action_noise < 0.0:
        raise ConfigError(f"--action-noise must be >= 0, got {action_noise}")
    if epsilon > 0 and not discrete:
        raise ConfigError(f"--epsilon applies to discrete actions, but {env_id} has continuous ones; use --action-noise SIGMA")
    if action_noise > 0 and discrete:
        raise ConfigError(f"--action-noise applies to continuous actions, but {env_id} has discrete ones; use --epsilon E")


def record_dataset(run_dir: str | Path, episodes: int, out: str, epsilon: float = 0.0, action_noise: float = 0.0,
                   seed: int = 0, max_steps: int = 100_000) -> Recording:
    """Play ``episodes`` episodes of the run in ``run_dir`` and write them as the Minari dataset ``out``.

    Episode ``i`` starts from ``env.reset(seed=seed + i)`` with a fresh policy (a recurrent
    policy's state or h-DQN's goals start afresh, as in evaluation); the exploration noise
    comes from a generator seeded with ``seed``, so the same call writes the same dataset. An
    episode still running after ``max_steps`` steps is cut there (marked truncated).
    """
    from shoal.run.reload import load_agent

    run_dir = Path(run_dir)
    builder, net, cfg, ckpt_steps = load_agent(run_dir)  # a missing run or checkpoint is a one-line error here
    env_id = cfg["env"]
    if not isinstance(env_id, str):
        raise ConfigError(f"run {run_dir} trains on {env_id!r}; recording needs a Gymnasium id")
    spec = env_spec(env_id)
    _check(episodes, epsilon, action_noise, spec.discrete, env_id)
    bounds = np.asarray([spec.action_low, spec.action_high], dtype=np.float64) if not spec.discrete else np.zeros(1)
    if action_noise > 0 and not np.isfinite(bounds).all():
        raise ConfigError(f"--action-noise is scaled by the action bounds, but {env_id} has unbounded actions; "
                          "record without --action-noise")
    dataset_id, dest = _destination(out)
    if dest.exists():
        raise ConfigError(f"dataset {out!r} already exists at {dest}; delete it or record under another name")

    import gymnasium as gym

    minari = import_minari()
    from minari.data_collector import EpisodeBuffer

    env = gym.make(env_id)
    shape = tuple(env.observation_space.shape or ())
    if shape != tuple(spec.obs_shape):
        env.close()
        raise ConfigError(f"run {run_dir} sees {env_id} through preprocessing (observations {list(spec.obs_shape)}, the env "
                          f"gives {list(shape)}); shoal record plays envs whose own observations the policy reads")
    rng = np.random.default_rng(seed)
    low = None if spec.discrete else np.asarray(spec.action_low, dtype=np.float32)
    high = None if spec.discrete else np.asarray(spec.action_high, dtype=np.float32)
    buffers: list[Any] = []
    returns: list[float] = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            # Policies may keep state across calls (an LSTM state, h-DQN's goal): each episode gets its own.
            policy = builder.make_policy(net, evaluation=True)
            observations, actions, rewards, terms, truncs = [obs], [], [], [], []
            for t in range(max_steps):
                action = np.asarray(policy(np.asarray(obs)[None]))[0]
                if spec.discrete:
                    if epsilon > 0 and rng.random() < epsilon:
                        action = rng.integers(spec.num_actions)
                    action = int(action)
                else:
                    assert low is not None and high is not None
                    if action_noise > 0:
                        action = action + action_noise * (high - low) / 2.0 * rng.standard_normal(action.shape)
                    action = np.clip(action, low, high).astype(np.float32)
                obs, reward, terminated, truncated, _ = env.step(action)
                truncated = truncated or (t == max_steps - 1 and not terminated)
                observations.append(obs)
                actions.append(action)
                rewards.append(float(reward))
                terms.append(bool(terminated))
                truncs.append(bool(truncated))
                if terminated or truncated:
                    break
            act = np.asarray(actions, dtype=np.int64 if spec.discrete else np.float32)
            buffers.append(EpisodeBuffer(id=i, seed=seed + i, observations=np.asarray(observations), actions=act,
                                         rewards=np.asarray(rewards), terminations=np.asarray(terms),
                                         truncations=np.asarray(truncs), infos={}))
            returns.append(float(np.sum(rewards)))
    finally:
        env.close()

    meta = {"name": out, "source_run": str(run_dir.resolve()), "source_algo": cfg["algo"], "source_checkpoint_steps": ckpt_steps,
            "policy": "greedy", "epsilon": float(epsilon), "action_noise": float(action_noise),
            "action_noise_units": "std in actions rescaled to [-1, 1], clipped to the bounds",
            "seed": int(seed), "episodes": int(episodes), "mean_return": float(np.mean(returns))}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=".shoal-record-", dir=dest.parent))
    try:
        with _minari_root(tmp_root), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Minari's reminders about authors and permalinks
            ds = minari.create_dataset_from_buffers(
                dataset_id, buffers, env=gym.spec(env_id), algorithm_name=f"shoal {cfg['algo']} (greedy"
                + (f", epsilon {epsilon}" if epsilon else "") + (f", action noise {action_noise}" if action_noise else "")
                + ")", description=f"{episodes} episodes of the shoal run {run_dir.name} on {env_id}")
            ds.storage.update_metadata({"shoal": meta})
        written = tmp_root / dataset_id
        if dest.exists():
            raise ConfigError(f"dataset {out!r} appeared at {dest} while recording; record under another name")
        os.replace(written, dest)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return Recording(dest, dataset_id, episodes, sum(len(b.rewards) for b in buffers), returns)

