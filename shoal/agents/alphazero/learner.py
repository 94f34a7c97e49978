"""The AlphaZero learner: a replay table of self-play positions and gradient steps on the dual-network loss."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoal.agents.alphazero.config import AlphaZeroConfig
from shoal.agents.alphazero.loss import alphazero_loss
from shoal.agents.alphazero.networks import PolicyValueNet
from shoal.core.interfaces import Learner
from shoal.core.nonfinite import NonFiniteGuard, parameter_groups
from shoal.data.table import ReplayTable
from shoal.nets.optim import Adam, load_optimizer_state, optimizer_state


class AlphaZeroLearner(Learner):
    """Samples ``batch_size`` positions, minimises CE + value MSE + L2 with Adam; ``replay_ratio`` paces the updates."""

    def __init__(self, net: PolicyValueNet, cfg: AlphaZeroConfig, seed: int) -> None:
        self.net, self.cfg = net, cfg
        self.opt = Adam(net.parameters(), lr=cfg.lr)
        self.table = ReplayTable.uniform(cfg.buffer_size, min_size=cfg.min_replay, seed=seed, name="self-play")
        self.positions = 0   # self-play positions written (not counting symmetric copies)
        self.updates = 0
        self.version = 0
        self.guard = NonFiniteGuard()
        """Skips (or stops on) an update with a NaN or inf in its inputs, loss or gradients."""
        self._groups = parameter_groups(net)

    def insert(self, items: dict[str, np.ndarray], positions: int) -> None:
        """Add a batch of (planes, pi, z) items that came from ``positions`` self-play moves."""
        n = len(items["z"])
        for start in range(0, n, self.table.capacity):
            part = {k: v[start:start + self.table.capacity] for k, v in items.items()}
            self.table.insert(part, timeout=0)
        self.positions += positions

    def updates_due(self) -> int:
        """Gradient steps owed to the replay ratio by the positions written so far."""
        if len(self.table) < self.cfg.min_replay:
            return 0
        owed = int(self.positions * self.cfg.replay_ratio / self.cfg.batch_size)
        return max(0, owed - self.updates)

    def step(self, data: Any = None) -> dict[str, float]:
        """One gradient step on a uniform sample of replay (``data`` is unused: positions come through :meth:`insert`)."""
        items, _, _ = self.table.sample(self.cfg.batch_size, timeout=0)
        self.net.train()
        # Batch-norm statistics move in the forward pass: kept, to be put back if the update is skipped.
        kept = [b.detach().clone() for b in self.net.buffers()]
        logits, values = self.net(torch.as_tensor(items["planes"]))
        loss, m = alphazero_loss(logits, values, torch.as_tensor(items["pi"]), torch.as_tensor(items["z"]),
                                 self.net.parameters(), self.cfg.l2, self.cfg.value_coef)
        self.opt.zero_grad()
        loss.backward()
        self.updates += 1  # owed to the replay ratio either way
        if not self.guard.check(loss, self._groups, items):
            with torch.no_grad():
                for b, k in zip(self.net.buffers(), kept):
                    b.copy_(k)
            return self.guard.metrics()  # parameters, optimiser and version stay as they were
        self.opt.step()
        self.version += 1
        return {"loss": float(loss.detach()), **{k: float(v) for k, v in m.items()}, **self.guard.metrics()}

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        """The version and the network's state dict (batch-norm statistics included)."""
        return self.version, {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def state(self) -> dict[str, Any]:
        """Network, optimiser, replay and counters."""
        from shoal.io.checkpoint import Detachable

        return {"net": self.get_variables()[1], "opt": optimizer_state(self.opt),
                "replay": Detachable(self.table.state()),
                "counters": {"positions": self.positions, "updates": self.updates, "version": self.version}}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.net.load_state_dict(state["net"])
        load_optimizer_state(self.opt, state["opt"])
        if state.get("replay"):
            self.table.load_state(state["replay"])
        c = state["counters"]
        self.positions, self.updates, self.version = int(c["positions"]), int(c["updates"]), int(c["version"])
