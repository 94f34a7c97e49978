"""The R2D2 learner: sample sequences, burn in from the stored state, n-step Double Q with value rescaling.

:meth:`R2D2Learner.step` samples its table: its own prioritized table in the ``local``
topology, the replay node's batches (a :class:`~shoal.services.replay.BatchFeed`) on the
Ape-X topology; either way the sequences' new priorities go back through
``update_priorities``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from shoal.agents.r2d2.config import R2D2Config
from shoal.agents.r2d2.loss import (
    inverse_value_rescale,
    n_step_double_q_targets,
    sequence_priorities,
    sequence_td_loss,
    trained_steps,
)
from shoal.agents.r2d2.networks import RecurrentQNetwork, burn_in_and_unroll, stored_state
from shoal.core.device import to_device
from shoal.core.interfaces import Learner, Table
from shoal.core.nonfinite import NonFiniteGuard, parameter_groups
from shoal.core.schedules import LinearSchedule
from shoal.data import importance_weights
from shoal.errors import ShoalWarning
from shoal.nets.optim import clip_grad_norm_, load_optimizer_state, make_optimizer, optimizer_state


def planned_learner_steps(cfg: R2D2Config, total_env_steps: int) -> int:
    """Learner steps a run of ``total_env_steps`` will take (the horizon of the beta schedule)."""
    if total_env_steps < cfg.learning_starts:
        return 1
    return ((total_env_steps - cfg.learning_starts) // cfg.train_freq + 1) * cfg.gradient_steps


class R2D2Learner(Learner):
    """Recurrent Double Q-learning from stored-state sequences with burn-in (Kapturowski et al. 2019)."""

    def __init__(self, net: RecurrentQNetwork, cfg: R2D2Config, table: Table | None, total_steps: int,
                 device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.target = copy.deepcopy(self.net)
        self.target.requires_grad_(False)
        self.cfg = cfg
        self.table = table
        self.opt = make_optimizer("adam", self.net.parameters(), cfg.lr, cfg.optimizer_eps)
        self.beta = LinearSchedule(cfg.per_beta, cfg.per_beta_final, planned_learner_steps(cfg, total_steps))
        self.steps = 0
        self._warned_untrained = False
        self._params = list(self.net.parameters())
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
        return self.steps, {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}

    def step(self, data: Any = None) -> dict[str, float]:
        """One update from a batch of sequences sampled from the learner's table; writes their new priorities back."""
        assert self.table is not None, "this learner has no table; call update() with sampled batches"
        items, keys, probs = self.table.sample(self.cfg.batch_size)
        metrics, priorities = self.update(items, probs, len(self.table))
        if self.cfg.prioritized:
            self.table.update_priorities(keys, priorities)
        return metrics

    def _tensor(self, x: np.ndarray | torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = np.asarray(x)
            x = torch.from_numpy(x if x.flags.writeable else x.copy())  # arrays from another process are read-only
        t = to_device(x, self.device)
        return t if dtype is None else t.to(dtype)

    def loss(self, items: Mapping[str, np.ndarray | torch.Tensor], weights: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss of a batch of sequences: ``(loss, td [T-1, B], valid [T-1, B], Q(s, a) [T-1, B])``.

        Both networks burn in from the stored state over the first ``burn_in`` timesteps
        (no gradient), then unroll the rest: the online net with gradient, the target net
        without. Items are ``[B, L, ...]`` as the table stores them.
        """
        c = self.cfg
        seq = {k: self._tensor(items[k]).transpose(0, 1) for k in ("obs", "action", "reward", "discount", "mask")}
        state = tuple(s.to(self.device) for s in stored_state(dict(items)))
        b = c.burn_in
        q_online = burn_in_and_unroll(self.net, seq["obs"], state, b)  # type: ignore[arg-type]
        with torch.no_grad():
            # No gradient flows anywhere in the target net: one unroll over the whole sequence, burn-in dropped.
            q_target = self.target(seq["obs"], state)[0][b:]
            mask = seq["mask"][b:].bool()
            target = n_step_double_q_targets(seq["reward"][b:].float(), seq["discount"][b:].float(), mask,
                                             q_online.detach(), q_target, c.n_step,
                                             c.rescale_eps if c.value_rescaling else None)
        q = q_online[:-1].gather(-1, seq["action"][b:-1].long().unsqueeze(-1)).squeeze(-1)
        valid = trained_steps(mask)
        loss, td = sequence_td_loss(q, target, valid, c.loss, c.huber_delta, weights)
        return loss, td, valid, q

    def update(self, items: Mapping[str, np.ndarray | torch.Tensor], probs: np.ndarray | None = None,
               table_size: int = 0) -> tuple[dict[str, float], np.ndarray]:
        """One gradient step on a batch of sequences; returns metrics and the sequences' new priorities.

        Metrics: ``loss`` and ``q_mean``, the mean Q(s, a) of the trained timesteps in the
        return's units (inverse-rescaled when ``value_rescaling``).

        ``probs`` and ``table_size`` (what the table's sample returned, and its size then)
        give the importance weights when ``prioritized``.
        """
        c = self.cfg
        weights = None
        if c.prioritized and probs is not None:
            w = importance_weights(probs, table_size, self.beta(self.steps))
            weights = to_device(torch.from_numpy(w), self.device)
        loss, td, valid, q = self.loss(items, weights)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if not self.guard.check(loss, self._groups, items):
            # Parameters, optimiser, target and step count stay; a non-finite sequence gets the least priority.
            priorities = sequence_priorities(td, valid, c.per_eta, c.per_eps).cpu().numpy().astype(np.float64)
            priorities[~np.isfinite(priorities)] = c.per_eps
            return self.guard.metrics(), priorities
        if c.max_grad_norm > 0:
            clip_grad_norm_(self._params, c.max_grad_norm)
        self.opt.step()
        self.steps += 1
        if self.steps % c.target_update_period == 0:
            self.target.load_state_dict(self.net.state_dict())
        priorities = sequence_priorities(td, valid, c.per_eta, c.per_eps).cpu().numpy().astype(np.float64)
        n = valid.sum().clamp(min=1)
        q_values = q.detach() if not c.value_rescaling else inverse_value_rescale(q.detach(), c.rescale_eps)
        q_mean = (q_values * valid).sum() / n  # in the return's units: h^-1 of the learned h(Q)
        trained = float(valid.float().mean())
        if trained == 0.0 and not self._warned_untrained:
            self._warned_untrained = True
            warnings.warn(f"a batch of R2D2 sequences had no timestep to train on after the burn-in of {c.burn_in}: "
                          f"episodes end within the burn-in; lower burn_in (now {c.burn_in})",
                          ShoalWarning, stacklevel=2)
        return {"loss": float(loss.detach()), "q_mean": float(q_mean), "trained_fraction": trained,
                **self.guard.metrics()}, priorities

    def state(self) -> dict[str, Any]:
        return {"networks": self.net.state_dict(), "target_networks": self.target.state_dict(),
                "optimizer": optimizer_state(self.opt), "steps": self.steps}

    def load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["networks"])
        self.target.load_state_dict(state["target_networks"])
        load_optimizer_state(self.opt, state["optimizer"])
        self.steps = int(state["steps"])
