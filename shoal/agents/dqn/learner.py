"""The DQN learner: sample, target, TD loss, step, priorities, target update.

The same learner serves every variant (flags in :class:`DQNConfig`) and both data paths:
:meth:`DQNLearner.step` samples from the learner's own table (the ``local`` topology),
:meth:`DQNLearner.update` learns from a batch sampled elsewhere and returns the new
priorities (the Ape-X topology's replay node).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from shoal.agents.dqn.config import DQNConfig
from shoal.agents.dqn.loss import double_q_target, priorities_from_td, q_learning_target, td_loss
from shoal.agents.dqn.networks import QNetwork
from shoal.core.device import to_device
from shoal.core.distributed import Collective
from shoal.core.interfaces import Learner, Table
from shoal.core.nonfinite import NonFiniteGuard, parameter_groups
from shoal.core.schedules import LinearSchedule
from shoal.data import ReplayTable, importance_weights
from shoal.nets.flat import flat_grad, set_flat_grad
from shoal.nets.optim import clip_grad_norm_, load_optimizer_state, make_optimizer, optimizer_state, polyak_update_

_FIELDS = ("obs", "action", "reward", "discount", "next_obs")


def planned_learner_steps(cfg: DQNConfig, total_env_steps: int) -> int:
    """Learner steps a run of ``total_env_steps`` will take (the horizon of the lr and beta schedules)."""
    if total_env_steps < cfg.learning_starts:
        return 1
    return ((total_env_steps - cfg.learning_starts) // cfg.train_freq + 1) * cfg.gradient_steps


class DQNLearner(Learner):
    """DQN with optional Double targets, prioritized replay, n-step items and Polyak targets."""

    def __init__(self, net: QNetwork, cfg: DQNConfig, table: Table | None, total_steps: int,
                 device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.target = copy.deepcopy(self.net)
        self.target.requires_grad_(False)
        self.cfg = cfg
        self.table = table
        self.opt = make_optimizer(cfg.optimizer, self.net.parameters(), cfg.lr, cfg.optimizer_eps)
        self.horizon = planned_learner_steps(cfg, total_steps)
        self.beta = LinearSchedule(cfg.per_beta, cfg.per_beta_final, self.horizon)
        self.lr = LinearSchedule(cfg.lr, cfg.lr_final if cfg.lr_final >= 0 else cfg.lr, self.horizon)
        self.steps = 0  # learner steps taken
        self._prefetched: list[dict[str, torch.Tensor]] = []  # batches drawn ahead within a round (uniform replay)
        self._params = list(self.net.parameters())
        self._target_tensors = list(self.target.state_dict().values())
        self._online_tensors = list(self.net.state_dict().values())
        self.collective: Collective | None = None
        """The learner group this learner is one rank of (None: it learns alone); its batches are then its shards."""
        self.guard = NonFiniteGuard()
        """Skips (or stops on) an update with a NaN or inf in its inputs, loss or gradients."""
        self._groups = parameter_groups(self.net)

    @property
    def version(self) -> int:
        """The learner's version is its step count (what :meth:`get_variables` labels the weights with)."""
        return self.steps

    @version.setter
    def version(self, value: int) -> None:
        self.steps = value

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        # Copies, also on the CPU (where .cpu() would alias the live weights): the caller may hold
        # them, labelled with this version, while later steps update the weights in place.
        return self.steps, {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}

    def step(self, data: Any = None) -> dict[str, float]:
        """One update from a batch of the learner's own table; writes the new priorities back.

        With uniform replay from a :class:`ReplayTable` the batches of a whole round
        (``gradient_steps`` of them) are drawn in one table call at the round's start: the
        same distribution, a fraction of the overhead. Prioritized replay samples every
        step, after the last priority update; other tables (a replay server's feed) are
        sampled one batch per step.
        """
        assert self.table is not None, "this learner has no table; call update() with sampled batches"
        cfg = self.cfg
        if cfg.prioritized or not isinstance(self.table, ReplayTable):
            items, keys, probs = self.table.sample(cfg.batch_size)
            metrics, priorities = self.update(items, probs, len(self.table))
            if cfg.prioritized:
                self.table.update_priorities(keys, priorities)
            return metrics
        if not self._prefetched:
            k = cfg.gradient_steps - self.steps % cfg.gradient_steps
            items, _, _ = self.table.sample(cfg.batch_size * k)
            tensors = {f: torch.from_numpy(np.asarray(items[f])) for f in _FIELDS}
            self._prefetched = [{f: t[i * cfg.batch_size:(i + 1) * cfg.batch_size] for f, t in tensors.items()}
                                for i in range(k)]
            self._prefetched.reverse()
        return self.update(self._prefetched.pop())[0]

    def _tensor(self, x: np.ndarray | torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            t = x
        else:
            x = np.asarray(x)
            t = torch.from_numpy(x if x.flags.writeable else x.copy())  # arrays from another process are read-only
        t = to_device(t, self.device)  # pinned and asynchronous on CUDA, a no-op on the CPU
        return t if dtype is None else t.to(dtype)

    def _loss(self, items: Mapping[str, np.ndarray | torch.Tensor], probs: np.ndarray | None,
              table_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The TD loss of a batch against the target network: ``(loss, td errors, Q(s, a))``."""
        cfg = self.cfg
        obs, next_obs = self._tensor(items["obs"]), self._tensor(items["next_obs"])
        action = self._tensor(items["action"], torch.int64)
        reward = self._tensor(items["reward"], torch.float32)
        discount = self._tensor(items["discount"], torch.float32)
        n = len(reward)

        if cfg.double:  # one forward for Q(s, .) and the online Q(s', .) that picks a*
            q_both = self.net(torch.cat([obs, next_obs]))
            q_all, next_online = q_both[:n], q_both[n:].detach()
        else:
            q_all = self.net(obs)
        q = q_all.gather(1, action.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            next_target = self.target(next_obs)
            target = (double_q_target(reward, discount, next_online, next_target) if cfg.double
                      else q_learning_target(reward, discount, next_target))
        weights = None
        if cfg.prioritized and probs is not None:
            beta = self.beta(self.steps)
            w = importance_weights(probs, table_size, beta)  # divided by this batch's largest weight
            if self.collective is not None:
                # A rank's batch is its shard's share of the group's batch: divide by the group's largest weight.
                largest = (table_size * float(np.min(probs))) ** -beta
                group_largest = float(self.collective.max(torch.tensor([largest], dtype=torch.float64)))
                w = (w * (largest / group_largest)).astype(np.float32)
            weights = to_device(torch.from_numpy(w), self.device)
        loss, td = td_loss(q, target, cfg.loss, cfg.huber_delta, weights)
        return loss, td, q

    def update(self, items: Mapping[str, np.ndarray | torch.Tensor], probs: np.ndarray | None = None,
               table_size: int = 0) -> tuple[dict[str, float], np.ndarray]:
        """One gradient step on a batch of n-step items; returns metrics and the items' new priorities.

        ``probs`` and ``table_size`` (what the table's sample returned, and its size then)
        give the importance weights when ``prioritized``.
        """
        cfg = self.cfg
        loss, td, q = self._loss(items, probs, table_size)
        if cfg.lr_final >= 0:
            lr = self.lr(self.steps)
            for g in self.opt.param_groups:
                g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.collective is not None:
            self.collective.average_gradients(self._params)  # every rank steps with the whole batch's gradient
        priorities = priorities_from_td(td, cfg.per_eps).cpu().numpy().astype(np.float64)
        if not self.guard.check(loss, self._groups, items, self.collective):
            # Parameters, optimiser, target and step count stay; a non-finite item gets the least priority,
            # so prioritized replay seldom draws it again (a finite one keeps its new priority).
            priorities[~np.isfinite(priorities)] = cfg.per_eps
            return self.guard.metrics(), priorities
        if cfg.max_grad_norm > 0:
            clip_grad_norm_(self._params, cfg.max_grad_norm)
        self.opt.step()
        self.steps += 1
        if self.steps % cfg.target_update_interval == 0:
            polyak_update_(self._target_tensors, self._online_tensors, cfg.tau)
        return {"loss": float(loss.detach()), "q_mean": float(q.detach().mean()), **self.guard.metrics()}, priorities

    def compute_gradients(self, items: Mapping[str, np.ndarray | torch.Tensor], probs: np.ndarray | None = None,
                          table_size: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        """The TD-loss gradient of a batch (targets from the target network) as one flat CPU vector, not applied.

        Clipped to ``max_grad_norm`` as a learner step would clip it (here, where the whole
        gradient is: GORILA's learners push it to parameter-server shards that each see a
        slice). Parameters, optimiser, target and step count are left unchanged. The metrics
        hold the batch's ``loss`` and the norm before clipping.
        """
        loss, _, q = self._loss(items, probs, table_size)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = clip_grad_norm_(self._params, self.cfg.max_grad_norm) if self.cfg.max_grad_norm > 0 else None
        grad = flat_grad(self._params).cpu()
        self.opt.zero_grad(set_to_none=True)
        return grad, {"loss": float(loss.detach()), "q_mean": float(q.detach().mean()),
                      "grad_norm": float(norm if norm is not None else grad.norm())}

    def apply_gradients(self, grad: torch.Tensor, env_steps: int = 0) -> dict[str, float]:
        """Apply a flat gradient computed elsewhere as one learner step (clip, optimiser, target schedule)."""
        cfg = self.cfg
        if cfg.lr_final >= 0:
            for g in self.opt.param_groups:
                g["lr"] = self.lr(self.steps)
        if not self.guard.check_flat(grad):  # parameters, optimiser, target and step count stay as they were
            return self.guard.metrics()
        set_flat_grad(self._params, grad.to(self.device))
        gn = clip_grad_norm_(self._params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else grad.norm()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.steps += 1
        if self.steps % cfg.target_update_interval == 0:
            self.update_target()
        return {"grad_norm": float(gn), **self.guard.metrics()}

    def update_target(self) -> None:
        """Move the target network to the online one (a copy when ``tau=1``, else a Polyak step)."""
        polyak_update_(self._target_tensors, self._online_tensors, self.cfg.tau)

    def state(self) -> dict[str, Any]:
        return {"networks": self.net.state_dict(), "target_networks": self.target.state_dict(),
                "optimizer": optimizer_state(self.opt), "steps": self.steps}

    def load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["networks"])
        self.target.load_state_dict(state["target_networks"])
        load_optimizer_state(self.opt, state["optimizer"])
        self.steps = int(state["steps"])
