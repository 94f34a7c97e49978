"""The reward learner: recent experience in, labelled pairs asked for, an ensemble trained, rewards out.

:class:`PreferenceRewardModel` is what sits between the actors' experience and the RL learner:

- :meth:`~PreferenceRewardModel.observe` takes transitions with the env's reward (kept here only,
  for the preference source and for reporting) into a :class:`~.segments.SegmentBuffer`;
- :meth:`~PreferenceRewardModel.maybe_update` asks for the labels the :class:`~.schedule.LabelSchedule`
  says are due: it draws ``candidate_factor`` times as many segment pairs as labels from recent
  experience, asks the source about those the ensemble disagrees on most (the variance of the
  members' ``P[seg1 > seg2]``), retrains every member on its own bootstrap of all labels so far with
  the Bradley-Terry loss, and measures the new model on fresh segments;
- :meth:`~PreferenceRewardModel.reward` is the normalised ensemble-mean reward the RL learner sees.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoal.agents.preference.config import PreferenceFields
from shoal.agents.preference.loss import bradley_terry_loss, preference_disagreement
from shoal.agents.preference.model import OutputNormalizer, RewardEnsemble, model_inputs
from shoal.agents.preference.schedule import LabelSchedule
from shoal.agents.preference.segments import SegmentBuffer, Segments
from shoal.agents.preference.sources import PreferenceSource, make_source
from shoal.core.nonfinite import SKIPPED_METRIC, NonFiniteGuard
from shoal.core.seeding import derive_seed
from shoal.core.types import EnvSpec
from shoal.errors import ConfigError
from shoal.nets.optim import Adam, load_optimizer_state, optimizer_state


def select_pairs(ensemble: RewardEnsemble, first: Segments, second: Segments, n: int) -> np.ndarray:
    """Indices of the ``n`` candidate pairs whose predicted preference varies most over the members."""
    with torch.no_grad():
        r1, r2 = segment_returns(ensemble, first), segment_returns(ensemble, second)
        var = preference_disagreement(r1, r2).numpy()
    return np.argsort(-var, kind="stable")[:n]


def segment_returns(ensemble: RewardEnsemble, seg: Segments) -> torch.Tensor:
    """Every member's predicted return of each segment: ``[K, N]``."""
    n, length = len(seg), seg.length
    x = torch.from_numpy(model_inputs(seg.obs.reshape(n * length, *seg.obs.shape[2:]),
                                      seg.action.reshape(n * length, *seg.action.shape[2:]), ensemble.num_actions))
    return ensemble(x).reshape(ensemble.num_members, n, length).sum(-1)


def ensemble_loss(ensemble: RewardEnsemble, first_rows: torch.Tensor, second_rows: torch.Tensor,
                  labels: torch.Tensor, response_noise: float = 0.0, l2: float = 0.0) -> torch.Tensor:
    """Sum over members of each member's loss: Bradley-Terry on its own minibatch plus ``l2 * sum ||W||^2``.

    ``first_rows``/``second_rows``: member ``k``'s pairs ``[K, B, L, in]``; ``labels``: ``[K, B]``. Summing
    over members (not averaging) gives each member the gradient of its own loss, so ``l2`` weighs the same
    against the data whatever the ensemble's size.
    """
    k, b, length = first_rows.shape[:3]
    rows = torch.cat([first_rows, second_rows], dim=1)  # [K, 2B, L, in]
    r = ensemble(rows.reshape(k, 2 * b * length, -1)).reshape(k, 2 * b, length).sum(-1)
    loss = bradley_terry_loss(r[:, :b], r[:, b:], labels, response_noise) * k  # the mean over [K, B], times K
    if l2 > 0:
        loss = loss + l2 * sum((w * w).sum() for w in ensemble.weights)
    return loss


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation (0 when either side is constant)."""
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


class PreferenceRewardModel:
    """An ensemble reward model trained online from preference labels; see the module docstring."""

    def __init__(self, cfg: PreferenceFields, env_spec: EnvSpec, total_steps: int, start: int, seed: int,
                 source: PreferenceSource | None = None) -> None:
        self.cfg = cfg
        obs_shape, act_dim = tuple(env_spec.obs_shape), env_spec.act_dim
        obs_dim = int(np.prod(obs_shape))
        gen = torch.Generator().manual_seed(derive_seed(seed, "reward_model"))
        self.ensemble = RewardEnsemble(obs_dim, act_dim, cfg.ensemble_size, cfg.reward_hidden,
                                       cfg.reward_activation, generator=gen,
                                       num_actions=env_spec.num_actions if env_spec.discrete else 0)
        self.opt = Adam(self.ensemble.parameters(), cfg.reward_lr)
        self.buffer = SegmentBuffer(cfg.segment_memory, obs_shape, (act_dim,))
        self.norm = OutputNormalizer(cfg.reward_scale)
        self.schedule = LabelSchedule(cfg.max_labels, cfg.initial_labels, cfg.label_every, start,
                                      cfg.label_horizon or total_steps, cfg.label_decay_steps)
        self.rng = np.random.default_rng(derive_seed(seed, "preferences"))
        self.source = source if source is not None else make_source(
            cfg.preference_source, derive_seed(seed, "oracle"), cfg.oracle_noise, cfg.oracle_tie_margin)
        self.first: Segments | None = None  # the labelled pairs so far, and their labels
        self.second: Segments | None = None
        self.labels = np.zeros(0)
        self.asked = 0
        self.last_query = 0
        self.env_steps = 0
        self.trained = False
        self.metrics: dict[str, float] = {}
        self.guard = NonFiniteGuard(owner="reward model")
        """Skips (or stops on) non-finite env rewards handed in and non-finite reward-model updates."""

    # -- experience in, rewards out --------------------------------------------------------------
    def observe(self, obs: np.ndarray, action: np.ndarray, true_reward: np.ndarray, next_obs: np.ndarray,
                done: np.ndarray) -> None:
        """Keep transitions (with the env's reward) for segments; fold the model's rewards into the normaliser.

        Transitions with a non-finite env reward, observation or action are left out (the chain breaks
        there, so no segment holds one, and the normaliser never sees a NaN) and counted, or stop the run
        with ``on_nonfinite=stop``.
        """
        n = len(obs)
        self.env_steps += n
        finite = np.isfinite(np.asarray(true_reward, np.float64))
        if not finite.all():
            self.guard.reject("env reward handed to the reward model")
        inputs_finite = (np.isfinite(np.asarray(obs, np.float64).reshape(n, -1)).all(1)
                         & np.isfinite(np.asarray(action, np.float64).reshape(n, -1)).all(1))
        if not inputs_finite.all():
            self.guard.reject("observation or action handed to the reward model")
        finite &= inputs_finite
        if not finite.all():
            obs, action, true_reward, next_obs, done = (x[finite] for x in (obs, action, true_reward, next_obs, done))
        self.buffer.add(obs, action, true_reward, next_obs, done)
        if self.trained and len(obs):
            self.norm.update(self.raw_reward(obs, action))

    @torch.no_grad()
    def raw_reward(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        """The ensemble's mean reward ``[N]``, before normalisation."""
        return self.ensemble(torch.from_numpy(model_inputs(obs, action, self.ensemble.num_actions))).mean(0).numpy()

    def reward(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        """The normalised learned reward ``[N]`` (float32): what the RL learner trains on."""
        return self.norm(self.raw_reward(obs, action))

    # -- labels and training ---------------------------------------------------------------------
    def maybe_update(self) -> dict[str, float]:
        """Ask for the labels now due and retrain if any came; the model's latest metrics."""
        due = self.schedule.due(self.env_steps, self.asked, self.last_query)
        if due > 0 and self.query(due) > 0:
            self.train()
        return self.report()

    def query(self, n: int) -> int:
        """Ask the source about the ``n`` most disputed of ``candidate_factor * n`` recent pairs; labels added."""
        m = n * self.cfg.candidate_factor
        first = self.buffer.sample(m, self.cfg.segment_length, self.rng)
        second = self.buffer.sample(m, self.cfg.segment_length, self.rng)
        if first is None or second is None:
            if not self.trained and len(self.buffer) >= self.buffer.capacity:
                raise ConfigError(f"no episode in the last segment_memory={self.cfg.segment_memory} steps lasted "
                                  f"segment_length={self.cfg.segment_length} steps, so no pair can be labelled; "
                                  "lower segment_length")
            return 0  # no whole segment yet: asked again at the next step
        pick = select_pairs(self.ensemble, first, second, n)
        first, second = first.take(pick), second.take(pick)
        labels = np.asarray(self.source.label(first, second), np.float64)
        self.first = first if self.first is None else Segments.concat([self.first, first])
        self.second = second if self.second is None else Segments.concat([self.second, second])
        self.labels = np.concatenate([self.labels, labels])
        self.asked += n
        self.last_query = self.env_steps
        return n

    def train(self) -> None:
        """``reward_updates`` Bradley-Terry steps; each member draws its minibatches from its own bootstrap."""
        assert self.first is not None and self.second is not None
        cfg, k, n = self.cfg, self.cfg.ensemble_size, len(self.labels)
        if not self.trained:  # input statistics from the experience so far, then fixed
            obs, act = self.buffer.recent(len(self.buffer))
            x = model_inputs(obs, act, self.ensemble.num_actions)
            self.ensemble.set_input_stats(x.mean(0), x.std(0))
        length = self.first.length
        pairs = [torch.from_numpy(model_inputs(s.obs.reshape(n * length, *s.obs.shape[2:]),
                                               s.action.reshape(n * length, *s.action.shape[2:]),
                                               self.ensemble.num_actions)
                                  ).reshape(n, length, -1) for s in (self.first, self.second)]
        labels = torch.from_numpy(self.labels).float()
        boot = self.rng.integers(0, n, (k, n))  # member k's bootstrap of the labelled pairs
        b = min(cfg.reward_batch_size, n)
        for _ in range(cfg.reward_updates):
            idx = torch.from_numpy(np.take_along_axis(boot, self.rng.integers(0, n, (k, b)), axis=1))  # [K, B]
            loss = ensemble_loss(self.ensemble, pairs[0][idx], pairs[1][idx], labels[idx], cfg.response_noise,
                                 cfg.reward_l2)
            self.opt.zero_grad()
            loss.backward()
            if self.guard.check(loss, {"reward_model": list(self.ensemble.parameters())}):
                self.opt.step()
        self.trained = True
        obs, act = self.buffer.recent(len(self.buffer))
        self.norm.reset()  # the model changed: the statistics start again from recent experience
        self.norm.update(self.raw_reward(obs, act))
        self.metrics = {"labels": float(self.asked), **self._evaluate(labels)}

    def report(self) -> dict[str, float]:
        """The latest metrics, with the count of what the guard skipped."""
        return {**self.metrics, "reward_model_" + SKIPPED_METRIC: float(self.guard.skipped)}

    @torch.no_grad()
    def _evaluate(self, labels: torch.Tensor) -> dict[str, float]:
        """Loss and accuracy on the labels; correlation and pair accuracy on fresh (unlabelled) segments."""
        assert self.first is not None and self.second is not None
        r1 = segment_returns(self.ensemble, self.first)
        r2 = segment_returns(self.ensemble, self.second)
        loss = float(bradley_terry_loss(r1, r2, labels, self.cfg.response_noise))
        decided = labels != 0.5
        pred = (r1.mean(0) > r2.mean(0)).float()
        acc = float((pred[decided] == labels[decided]).float().mean()) if bool(decided.any()) else float("nan")
        out = {"reward_model_loss": loss, "reward_model_accuracy": acc}
        held = self.buffer.sample(2 * (self.cfg.heldout_segments // 2), self.cfg.segment_length, self.rng)
        if held is not None:
            pred_ret = segment_returns(self.ensemble, held).mean(0).numpy()
            true_ret = held.true_return
            h = len(held) // 2
            truth, guess = true_ret[:h] > true_ret[h:], pred_ret[:h] > pred_ret[h:]
            differ = true_ret[:h] != true_ret[h:]
            out["reward_corr"] = _corr(pred_ret, true_ret)
            out["reward_heldout_accuracy"] = float((truth == guess)[differ].mean()) if differ.any() else float("nan")
        return out

    # -- checkpoints -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Weights, optimiser, normaliser, labelled pairs, recent experience, generators and counters."""
        pairs: dict[str, Any] = {}
        if self.first is not None and self.second is not None:
            pairs = {"first_obs": self.first.obs, "first_action": self.first.action,
                     "first_true_reward": self.first.true_reward, "second_obs": self.second.obs,
                     "second_action": self.second.action, "second_true_reward": self.second.true_reward}
        return {"ensemble": dict(self.ensemble.state_dict()), "opt": optimizer_state(self.opt),
                "norm": self.norm.state(), "buffer": self.buffer.state(), "pairs": pairs,
                "labels": self.labels.copy(), "rng": self.rng.bit_generator.state, "source": self.source.state(),
                "counters": {"asked": self.asked, "last_query": self.last_query, "env_steps": self.env_steps,
                             "trained": self.trained, "skipped": self.guard.skipped}, "metrics": dict(self.metrics)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        self.ensemble.load_state_dict(state["ensemble"])
        load_optimizer_state(self.opt, state["opt"])
        self.norm.load_state(state["norm"])
        self.buffer.load_state(state["buffer"])
        p = state["pairs"]
        if p:
            self.first = Segments(np.asarray(p["first_obs"]), np.asarray(p["first_action"]),
                                  np.asarray(p["first_true_reward"]))
            self.second = Segments(np.asarray(p["second_obs"]), np.asarray(p["second_action"]),
                                   np.asarray(p["second_true_reward"]))
        self.labels = np.asarray(state["labels"], np.float64)
        self.rng.bit_generator.state = state["rng"]
        self.source.load_state(state["source"])
        c = state["counters"]
        self.asked, self.last_query, self.env_steps = int(c["asked"]), int(c["last_query"]), int(c["env_steps"])
        self.trained = bool(c["trained"])
        self.guard.skipped = int(c["skipped"])
        self.metrics = {k: float(v) for k, v in state["metrics"].items()}
