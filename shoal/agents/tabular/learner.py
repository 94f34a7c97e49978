"""The tabular learner: applies the actors' transitions to the Q-table in the order they happened."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoal.agents.tabular.config import SarsaLambdaConfig, TabularConfig
from shoal.agents.tabular.networks import QTable
from shoal.agents.tabular.update import q_learning_update, sarsa_lambda_update, sarsa_update
from shoal.core.interfaces import Learner
from shoal.core.nonfinite import NonFiniteGuard
from shoal.core.schedules import schedule


class TabularLearner(Learner):
    """Q-learning, Sarsa or Sarsa(lambda), chosen by ``config.update``.

    Eligibility traces live here, one ``[S, A]`` table per (actor, env copy), and are
    zeroed whenever a transition is the first of its episode.
    """

    def __init__(self, net: QTable, cfg: TabularConfig, total_steps: int) -> None:
        self.net = net
        self.q = net.numpy()
        self.cfg = cfg
        self.total_steps = max(1, total_steps)
        self.version = 0
        self.env_steps = 0
        self.traces: dict[int, np.ndarray] = {}
        self.guard = NonFiniteGuard()
        """Counts (or stops on) transitions whose TD target is NaN or inf; the table skips them."""

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        return self.version, {"q": self.net.q.clone()}

    def _traces(self, actor_id: int, num_envs: int) -> np.ndarray:
        e = self.traces.get(actor_id)
        if e is None or e.shape[0] != num_envs:
            e = self.traces[actor_id] = np.zeros((num_envs, *self.q.shape))
        return e

    def step(self, data: Any = None) -> dict[str, float]:
        batches = data if isinstance(data, list) else [data]
        cfg, q = self.cfg, self.q
        alpha = schedule(cfg.alpha, cfg.alpha_final, self.env_steps / self.total_steps, cfg.alpha_schedule)
        gamma = cfg.gamma
        abs_td, n, applied = 0.0, 0, 0
        for d in batches:
            if d is None or len(d["s"]) == 0:
                continue
            T, B = d["s"].shape
            # Plain Python scalars: numpy scalar indexing is the cost of this loop.
            s, a, r, s2, a2 = (d[k].tolist() for k in ("s", "a", "r", "s2", "a2"))
            term, first = d["terminated"].tolist(), d["first"].tolist()
            traces = self._traces(d.get("actor_id", 0), B) if cfg.update == "sarsa_lambda" else None
            for t in range(T):
                for b in range(B):
                    if cfg.update == "q_learning":
                        delta = q_learning_update(q, s[t][b], a[t][b], r[t][b], s2[t][b], term[t][b], alpha, gamma)
                    elif cfg.update == "sarsa":
                        delta = sarsa_update(q, s[t][b], a[t][b], r[t][b], s2[t][b], a2[t][b], term[t][b], alpha, gamma)
                    else:
                        # sarsa_lambda: traces were made for this batch above; lam and traces are its config's
                        assert traces is not None and isinstance(cfg, SarsaLambdaConfig), "sarsa_lambda needs a SarsaLambdaConfig"
                        if first[t][b]:
                            traces[b].fill(0.0)
                        delta = sarsa_lambda_update(q, traces[b], s[t][b], a[t][b], r[t][b], s2[t][b], a2[t][b], term[t][b],
                                                    alpha, gamma, cfg.lam, cfg.traces)
                    n += 1
                    if delta != delta:  # a non-finite TD target: the table was left as it was
                        self.guard.reject(f"TD target (reward {r[t][b]})", self.env_steps + n)
                        continue
                    abs_td += abs(delta)
                    applied += 1
        self.env_steps += n
        if n == 0:
            return {}
        if applied == 0:  # every transition skipped: the table is as it was, so its version is too
            return self.guard.metrics()
        self.version += 1
        eps = schedule(cfg.epsilon, cfg.epsilon_final, self.env_steps / self.total_steps, cfg.epsilon_schedule, cfg.epsilon_decay)
        return {"td_error_abs": abs_td / applied, "alpha": alpha, "epsilon": eps, **self.guard.metrics()}

    def state(self) -> dict[str, Any]:
        # Traces are not saved: a resumed run restarts its episodes, and traces reset at episode start.
        return {"networks": self.net.state_dict(), "version": self.version, "env_steps": self.env_steps}

    def load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["networks"])
        self.version = int(state["version"])
        self.env_steps = int(state["env_steps"])
        self.traces.clear()
