"""Dyna-Q and Dyna-Q+ (Sutton & Barto, sections 8.2-8.3): Q-learning that also plans with a learned model.

Every real transition is (d) a Q-learning update, (e) a model update, then (f)
``planning_steps`` Q-learning updates on transitions the model replays: each a previously
observed state drawn uniformly, then an action previously taken in it drawn uniformly, with
a seeded generator. Dyna-Q+ adds ``kappa * sqrt(tau)`` to each planned reward, tau the real
steps since the pair was last tried, and plans untried actions of visited states too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from shoal.agents.tabular.actor import TabularActor
from shoal.agents.tabular.builder import TabularBuilder
from shoal.agents.tabular.config import DynaQConfig
from shoal.agents.tabular.learner import TabularLearner
from shoal.agents.tabular.model import TabularModel
from shoal.agents.tabular.networks import QTable
from shoal.agents.tabular.update import q_learning_update
from shoal.core.interfaces import Table
from shoal.core.schedules import schedule
from shoal.core.seeding import derive_seed
from shoal.core.types import EnvSpec
from shoal.envs.ids import bare_env_id
from shoal.errors import ConfigError

#: The env whose wall moves after a number of steps each env copy counts on its own.
_BLOCKING_MAZE = "shoal/BlockingMaze-v0"


def planning_updates(q: np.ndarray, model: TabularModel, pairs: np.ndarray, alpha: float, gamma: float,
                     kappa: float = 0.0, now: int = 0) -> float:
    """Q-learning updates of ``q`` (in place) on the model's transitions for the flat ``pairs``, in order.

    Each is :func:`~shoal.agents.tabular.update.q_learning_update` on ``(s, a, r', s', terminated)``
    from the model, with the planned reward ``r' = r + kappa * sqrt(now - last_tried(s, a))``;
    returns the sum of |TD error|.
    """
    if len(pairs) == 0:
        return 0.0
    A = q.shape[1]
    # The model does not change while planning: gather its entries (and bonuses) at once.
    rewards = model.reward.reshape(-1)[pairs]
    if kappa:
        rewards = rewards + kappa * np.sqrt(now - model.last_tried.reshape(-1)[pairs])
    nxt, term = model.next_state.reshape(-1)[pairs].tolist(), model.terminated.reshape(-1)[pairs].tolist()
    # Rows as Python lists: numpy scalar indexing and reductions on short rows would be most of the cost.
    rows: dict[int, list[float]] = {}
    abs_td = 0.0
    idx = pairs.tolist()
    for i, r, s2, done in zip(idx, rewards.tolist(), nxt, term):
        row = rows.get(i // A)
        if row is None:
            row = rows[i // A] = q[i // A].tolist()
        if done:
            target = r
        else:
            nrow = rows.get(s2)
            target = r + gamma * max(q[s2].tolist() if nrow is None else nrow)
        delta = target - row[i % A]
        row[i % A] += alpha * delta
        abs_td += abs(delta)
    q[pairs // A, pairs % A] = [rows[i // A][i % A] for i in idx]  # repeated pairs all hold their final value
    return abs_td


class DynaQLearner(TabularLearner):
    """Applies the actors' transitions in order, each followed by its planning updates.

    ``env_steps`` counts real transitions; it is the clock of ``tau`` and, with the model
    and the planning generator, is checkpointed, so a resumed run plans exactly as an
    uninterrupted one would.
    """

    cfg: DynaQConfig

    def __init__(self, net: QTable, cfg: DynaQConfig, total_steps: int, seed: int) -> None:
        super().__init__(net, cfg, total_steps)
        self.model = TabularModel(*self.q.shape)
        self.rng = np.random.default_rng(seed)

    def step(self, data: Any = None) -> dict[str, float]:
        batches = data if isinstance(data, list) else [data]
        cfg, q, model = self.cfg, self.q, self.model
        alpha = schedule(cfg.alpha, cfg.alpha_final, self.env_steps / self.total_steps, cfg.alpha_schedule)
        kappa = cfg.kappa if cfg.plus else 0.0
        abs_td = plan_td = 0.0
        n0, applied = self.env_steps, 0
        for d in batches:
            if d is None or len(d["s"]) == 0:
                continue
            s, a, r, s2, term = (d[k].tolist() for k in ("s", "a", "r", "s2", "terminated"))
            for t in range(len(s)):
                for b in range(len(s[t])):
                    delta = q_learning_update(q, s[t][b], a[t][b], r[t][b], s2[t][b], term[t][b], alpha, cfg.gamma)
                    self.env_steps += 1
                    if delta != delta:  # a non-finite TD target: neither the table nor the model learns from it
                        self.guard.reject(f"TD target (reward {r[t][b]})", self.env_steps)
                        continue
                    abs_td += abs(delta)
                    applied += 1
                    model.observe(s[t][b], a[t][b], r[t][b], s2[t][b], term[t][b], self.env_steps)
                    pairs = model.sample(self.rng, cfg.planning_steps, untried=cfg.plus)
                    plan_td += planning_updates(q, model, pairs, alpha, cfg.gamma, kappa, self.env_steps)
        n = self.env_steps - n0
        if n == 0:
            return {}
        if applied == 0:  # every transition skipped: neither the table nor the model moved, nor does the version
            return self.guard.metrics()
        self.version += 1
        eps = schedule(cfg.epsilon, cfg.epsilon_final, self.env_steps / self.total_steps, cfg.epsilon_schedule, cfg.epsilon_decay)
        out = {"td_error_abs": abs_td / applied, "alpha": alpha, "epsilon": eps, "model_pairs": float(model.num_pairs),
               **self.guard.metrics()}
        if cfg.planning_steps:
            out["planning_td_error_abs"] = plan_td / (applied * cfg.planning_steps)
        return out

    def state(self) -> dict[str, Any]:
        return {**super().state(), "model": self.model.state(), "rng": self.rng.bit_generator.state}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.model.load_state(state["model"])
        self.rng.bit_generator.state = state["rng"]


class DynaQBuilder(TabularBuilder):
    """The tabular builder with a :class:`DynaQLearner`; actor and policies are Q-learning's.

    On ``shoal/BlockingMaze-v0`` it refuses more than one env copy or actor: each copy moves its
    wall after its own steps, so with several the move would come late in the run's count.
    """

    config: DynaQConfig
    name = "dyna_q"

    def __init__(self, config: DynaQConfig, env_spec: EnvSpec, total_steps: int = 0, seed: int = 0,
                 device: str = "cpu") -> None:
        super().__init__(config, env_spec, total_steps, seed, device)
        if config.num_envs != 1 and bare_env_id(env_spec.env_id) == _BLOCKING_MAZE:
            raise ConfigError(f"{_BLOCKING_MAZE} needs num_envs=1, got {config.num_envs}: each env copy moves its wall after "
                              "its own 1,000 steps, not the run's; drop num_envs")

    def make_actor(self, networks: nn.Module, num_envs: int, actor_id: int = 0, num_actors: int = 1,
                   seed: int = 0) -> TabularActor:
        if num_actors != 1 and bare_env_id(self.env_spec.env_id) == _BLOCKING_MAZE:
            raise ConfigError(f"{_BLOCKING_MAZE} needs num_actors=1, got {num_actors}: each actor's env moves its wall after "
                              "its own 1,000 steps, not the run's; drop num_actors")
        return super().make_actor(networks, num_envs, actor_id, num_actors, seed)

    def make_learner(self, networks: nn.Module, tables: dict[str, Table]) -> DynaQLearner:
        assert isinstance(networks, QTable)
        return DynaQLearner(networks, self.config, self.total_steps, derive_seed(self.seed, "planning"))
