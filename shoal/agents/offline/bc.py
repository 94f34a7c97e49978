"""The behaviour-cloning learner: supervised updates on dataset batches, early stopping on held-out episodes.

Discrete actions: the logits come from a :class:`~shoal.agents.dqn.networks.QNetwork`
(its outputs read as logits, so the greedy policy, ``shoal eval`` and export treat it as
any Q-learner's argmax). Continuous actions: the tanh-Gaussian policy of
:class:`~shoal.agents.continuous.networks.ContinuousNetworks` (its critics stay unused),
fitted by likelihood or by regression of ``tanh(mean)``; the greedy action is ``tanh(mean)``.

Every ``validate_every`` updates the loss on the validation episodes is measured; the
weights with the lowest one are kept, and after ``patience`` checks without a better one
the learner stops (its later steps do nothing and report ``converged = 1``) with those
weights restored. When the run's budget (``total_steps`` updates) ends first, its last
update runs one more check and restores the best weights too, so a run ends with the
validation-best weights either way.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from shoal.agents.continuous.networks import ContinuousNetworks
from shoal.agents.offline.config import BCConfig
from shoal.agents.offline.loss import bc_discrete_loss, bc_mse_loss, bc_nll_loss
from shoal.core.interfaces import Learner
from shoal.nets.optim import load_optimizer_state, make_optimizer, optimizer_state


class BCLearner(Learner):
    """Behaviour cloning on ``train`` items (``obs``, ``action``), early stopping on ``val``."""

    def __init__(self, net: nn.Module, cfg: BCConfig, train: dict[str, np.ndarray], val: dict[str, np.ndarray] | None,
                 seed: int, device: str = "cpu", total_steps: int = 0) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.cfg = cfg
        self.continuous = isinstance(net, ContinuousNetworks)
        params = net.policy.parameters() if isinstance(net, ContinuousNetworks) else net.parameters()
        self.opt = make_optimizer("adam", params, cfg.lr, 1e-8)
        self.train = {k: torch.as_tensor(np.asarray(train[k])).to(self.device) for k in ("obs", "action")}
        self.val = None if val is None else {k: torch.as_tensor(np.asarray(val[k])).to(self.device)
                                             for k in ("obs", "action")}
        self.gen = torch.Generator().manual_seed(seed)
        self.steps = 0
        self.total_steps = int(total_steps)
        """The run's budget of updates (0: unknown); its last update restores the best weights."""
        self.best_loss = float("inf")
        self.best_step = 0
        self.bad_checks = 0
        self.converged = False
        self._best: dict[str, torch.Tensor] | None = None
        self._val_loss = float("nan")
        self._last: dict[str, float] = {}

    def loss(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The behaviour-cloning loss of a batch."""
        if not self.continuous:
            return bc_discrete_loss(self.net(obs), action)
        net = self.net
        assert isinstance(net, ContinuousNetworks)
        mean, log_std = net.policy(net.normalize(obs))
        return bc_nll_loss(mean, log_std, action) if self.cfg.loss == "nll" else bc_mse_loss(mean, action)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """The loss over every validation item (NaN without a validation split)."""
        if self.val is None:
            return float("nan")
        total, n = 0.0, len(self.val["obs"])
        for i in range(0, n, 4096):
            total += float(self.loss(self.val["obs"][i:i + 4096], self.val["action"][i:i + 4096])) * min(4096, n - i)
        return total / n

    def step(self, data: Any = None) -> dict[str, float]:
        """One update on a uniformly drawn batch, and a validation check when one is due."""
        if self.converged:  # the same keys every step: the learner node averages each over all steps of a call
            return {**self._last, "converged": 1.0}
        cfg = self.cfg
        idx = torch.randint(len(self.train["obs"]), (cfg.batch_size,), generator=self.gen).to(self.device)
        loss = self.loss(self.train["obs"][idx], self.train["action"][idx])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1
        metrics = {"loss": float(loss.detach()), "converged": 0.0}
        last = self.total_steps > 0 and self.steps >= self.total_steps
        if self.val is not None and (self.steps % cfg.validate_every == 0 or last):
            val = self.validation_loss()
            self._val_loss = val
            if val < self.best_loss - cfg.min_delta:
                self.best_loss, self.best_step, self.bad_checks = val, self.steps, 0
                self._best = copy.deepcopy(self.net.state_dict())
            else:
                self.bad_checks += 1
                if cfg.patience and self.bad_checks >= cfg.patience:
                    self._restore_best()
                    self.converged = True
                    metrics["converged"] = 1.0
            if last and not self.converged:  # the budget ends before early stopping: keep the best, not the last
                self._restore_best()
                self.converged = True
                metrics["converged"] = 1.0
        if self.val is not None and np.isfinite(self.best_loss):  # the latest check's, repeated until the next one
            metrics["val_loss"], metrics["best_val_loss"] = self._val_loss, self.best_loss
        self._last = {k: v for k, v in metrics.items() if k != "converged"}
        return metrics

    def _restore_best(self) -> None:
        if self._best is not None:
            self.net.load_state_dict(self._best)

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        return self.steps, {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}

    def state(self) -> dict[str, Any]:
        return {"networks": self.net.state_dict(), "optimizer": optimizer_state(self.opt), "steps": self.steps,
                "generator": self.gen.get_state(), "best_loss": self.best_loss if np.isfinite(self.best_loss) else None,
                "best_step": self.best_step, "val_loss": self._val_loss if np.isfinite(self._val_loss) else None,
                "bad_checks": self.bad_checks, "converged": self.converged,
                "best_networks": self._best if self._best is not None else {}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["networks"])
        load_optimizer_state(self.opt, state["optimizer"])
        self.steps = int(state["steps"])
        self.gen.set_state(state["generator"])
        self.best_loss = float("inf") if state["best_loss"] is None else float(state["best_loss"])
        self.best_step = int(state["best_step"])
        self._val_loss = float("nan") if state["val_loss"] is None else float(state["val_loss"])  # the latest check's
        self.bad_checks, self.converged = int(state["bad_checks"]), bool(state["converged"])
        self._best = dict(state["best_networks"]) or None
