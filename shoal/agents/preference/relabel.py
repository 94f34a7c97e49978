"""The seam between experience and the RL learner: the env's reward goes to the reward model, never further.

Off-policy (SAC): :class:`PreferenceTable` wraps the replay table. :meth:`~PreferenceTable.insert`
hands each transition (with the env's reward) to the :class:`~.trainer.PreferenceRewardModel` and
stores it *without* a reward; :meth:`~PreferenceTable.try_sample` computes every sampled item's reward
from the current model at sample time, so the replay is always relabelled with the latest model and
the stored data holds no reward at all.

On-policy (PPO): :class:`PreferenceLearner` takes each rollout's env rewards into the reward model and
passes the RL learner a copy of the rollout whose rewards are the model's.

In both cases :class:`PreferenceLearner` asks for labels and retrains the model when the schedule says
so, before the RL update it wraps, and adds the reward model's metrics to the learner's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
import torch

from shoal.agents.preference.trainer import PreferenceRewardModel
from shoal.core.interfaces import Learner, Table
from shoal.core.types import Rollout
from shoal.errors import ConfigError

#: Why pref_sac and pref_ppo run on the local topology with one learner (what fit checks report).
WHY_LOCAL = ("preference learning keeps its reward model and labels in one learner on the local topology; "
             "drop --topology")
WHY_ONE_LEARNER = "preference learning trains one reward model beside one learner; use num_learners=1"


class PreferenceBuilderMixin:
    """What every builder on the learned reward shares: its config type checked, one learner on the local topology.

    Put it before the algorithm's own builder: ``class PrefSACBuilder(PreferenceBuilderMixin, ContinuousBuilder)``.
    """

    config_type: type = object

    def __init__(self, config: Any, env_spec: Any, total_steps: int = 0, seed: int = 0, device: str = "cpu") -> None:
        if not isinstance(config, self.config_type):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_type.__name__}, got {type(config).__name__}")
        super().__init__(config, env_spec, total_steps, seed, device)  # type: ignore[call-arg]

    @property
    def local_only(self) -> str | None:
        return WHY_LOCAL

    @property
    def single_learner(self) -> str | None:
        return WHY_ONE_LEARNER


class PreferenceTable(Table):
    """A replay table whose items carry no reward; sampled items get the reward model's."""

    def __init__(self, inner: Table, model: PreferenceRewardModel) -> None:
        self.inner, self.model = inner, model

    def __getattr__(self, name: str) -> Any:  # selector, capacity, ... of the wrapped table
        if name in ("inner", "model"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def insert(self, items: dict[str, np.ndarray], priorities: np.ndarray | None = None) -> np.ndarray:
        """Give the transitions (env reward included) to the reward model; store them without the reward."""
        items = dict(items)
        true_reward = items.pop("reward")
        done = np.asarray(items["discount"]) == 0.0  # terminated; truncation is seen as an obs mismatch
        self.model.observe(items["obs"], items["action"], true_reward, items["next_obs"], done)
        return self.inner.insert(items, priorities)

    def _relabel(self, sample: tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]
                 ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        items, keys, probs = sample
        items = dict(items)
        items["reward"] = self.model.reward(items["obs"], items["action"])
        return items, keys, probs

    def sample(self, n: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        return self._relabel(self.inner.sample(n))

    def try_sample(self, n: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray] | None:
        """Like the wrapped table's ``try_sample``, with rewards from the current reward model."""
        sample = self.inner.try_sample(n)  # type: ignore[attr-defined]
        return None if sample is None else self._relabel(sample)

    def sample_batches(self, num_batches: int, batch_size: int
                       ) -> list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
        return [self._relabel(s) for s in self.inner.sample_batches(num_batches, batch_size)]

    def can_sample(self, n: int = 1) -> bool:
        return self.inner.can_sample(n)

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        self.inner.update_priorities(keys, priorities)

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state(state)


def observe_rollout(rollout: Rollout, model: PreferenceRewardModel) -> None:
    """Give the rollout's transitions, env rewards included, to ``model``, each env copy's steps in order."""
    obs, actions = np.asarray(rollout.obs), np.asarray(rollout.actions)
    T, B = np.asarray(rollout.rewards).shape
    # next_obs: the following row; the final observation where an episode was truncated; last_obs at the end.
    nxt = np.empty_like(obs)
    nxt[:-1] = obs[1:]
    nxt[-1] = np.asarray(rollout.last_obs) if rollout.last_obs is not None else obs[-1]
    if rollout.final_t is not None and len(rollout.final_t):
        nxt[np.asarray(rollout.final_t), np.asarray(rollout.final_b)] = np.asarray(rollout.final_obs)
    done = np.asarray(rollout.terminated, bool) | np.asarray(rollout.truncated, bool)
    if rollout.last_obs is None:  # what follows the last row is unknown: its chains end there
        done[-1] = True
    flat = lambda x: x.swapaxes(0, 1).reshape(T * B, *x.shape[2:])  # noqa: E731  # copy-major
    model.observe(flat(obs), flat(actions.reshape(T, B, -1)), flat(np.asarray(rollout.rewards, np.float64)),
                  flat(nxt), flat(done))


def with_learned_rewards(rollout: Rollout, model: PreferenceRewardModel) -> Rollout:
    """A copy of ``rollout`` whose rewards are the model's normalised rewards (nothing of the env's reward)."""
    obs, actions = np.asarray(rollout.obs), np.asarray(rollout.actions)
    T, B = np.asarray(rollout.rewards).shape
    learned = model.reward(obs.reshape(T * B, *obs.shape[2:]), actions.reshape(T * B, -1)).reshape(T, B)
    return dataclasses.replace(rollout, rewards=learned)


class PreferenceLearner(Learner):
    """Wraps an RL learner: labels and reward-model training as scheduled, then the learner's update.

    ``on_policy``: ``step`` gets rollouts, relabelled here; otherwise the learner samples a
    :class:`PreferenceTable` that relabels at sample time.
    """

    def __init__(self, inner: Learner, model: PreferenceRewardModel, on_policy: bool) -> None:
        self.inner, self.model, self.on_policy = inner, model, on_policy

    def __getattr__(self, name: str) -> Any:  # device, net, guard, ... of the wrapped learner
        if name in ("inner", "model", "on_policy"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def version(self) -> int:  # type: ignore[override]
        return self.inner.version

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        return self.inner.get_variables()

    def step(self, data: Any = None) -> Mapping[str, float | torch.Tensor]:
        """Relabel on-policy data, ask and train as scheduled, then one update of the wrapped learner.

        Until the reward model has had its first labels the wrapped learner is not stepped: its first
        update is on the reward learned from ``initial_labels``, never on an untrained network's.
        """
        if self.on_policy and data is not None:
            rollouts = data if isinstance(data, list) else [data]
            for r in rollouts:
                observe_rollout(r, self.model)
            pref = self.model.maybe_update()  # first: the rewards below come from the model as it is now
            if not self.model.trained:  # no labels yet (no whole segment): no RL on an untrained reward
                return pref
            relabelled = [with_learned_rewards(r, self.model) for r in rollouts]
            data = relabelled if isinstance(data, list) else relabelled[0]
        else:
            pref = self.model.maybe_update()
            if not self.model.trained:
                return pref
        out = dict(self.inner.step(data))
        out.update(pref)
        return out

    def state(self) -> dict[str, Any]:
        return {"rl": self.inner.state(), "reward_model": self.model.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state(state["rl"])
        self.model.load_state(state["reward_model"])
