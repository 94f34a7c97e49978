"""Hyperparameters of h-DQN (Kulkarni et al. 2016): two DQNs, a meta-controller over goals and a controller over actions.

Both levels are DQN learners with DQN's settings (network sizes, optimiser, replay,
update schedule, Double/Dueling/prioritized flags), one replay table each. What is
h-DQN's own: the goals, and the two exploration rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.agents.dqn.config import DQNConfig
from shoal.config import in_range, positive, require


@dataclass
class HDQNConfig(DQNConfig):
    """h-DQN: a meta-controller DQN ``Q(s, g)`` picks goals, a controller DQN ``Q((s, g), a)`` acts to reach them.

    The DQN fields apply to both levels. ``epsilon_start``, ``epsilon_final`` and
    ``exploration_fraction`` are the meta-controller's schedule (linear over the run's env
    steps); the controller's rate is set per goal by its success rate (``controller_epsilon_min``,
    ``success_window``).
    """

    train_freq: int = 16
    gradient_steps: int = 4
    learning_starts: int = 1000
    batch_size: int = 32
    buffer_size: int = 50_000
    hidden: tuple[int, ...] = (32,)
    target_update_interval: int = 250
    epsilon_final: float = 0.1
    exploration_fraction: float = 0.25
    goal_fn: str = ""
    """``module:function`` deciding when goals are reached: ``f(obs [B, *obs_shape], goals [B] int) -> [B] bool``;
    empty: each Discrete observation is a goal, reached when the observation equals it."""
    num_goals: int = 0
    """Number of goals (ids 0..num_goals-1); required with goal_fn, else 0 (the number of Discrete observations)."""
    controller_epsilon_min: float = 0.1
    """Floor of the controller's per-goal exploration rate: epsilon_g = max(this, 1 - success rate of goal g)."""
    success_window: int = 100
    """Attempts of each goal (the newest) over which its success rate is measured; a goal never tried has rate 0."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.n_step == 1, f"hdqn learns from one-step transitions (its goals end spans at any step), got n_step={self.n_step}; "
                "drop n_step")
        require(self.exploration == "linear", "hdqn's meta-controller anneals epsilon linearly and its controller per goal; "
                "drop exploration=apex")
        require(not self.actor_priorities, "hdqn's actors do not compute priorities; drop actor_priorities")
        require(not self.frame_storage, "hdqn stores feature vectors, not stacked frames; drop frame_storage")
        require(self.num_goals >= 0, f"num_goals must be >= 0 (0: one goal per Discrete observation), got {self.num_goals}")
        require(not self.goal_fn or (":" in self.goal_fn and self.num_goals > 0),
                f"goal_fn={self.goal_fn!r} needs the form module:function and num_goals > 0 (got {self.num_goals}); "
                "e.g. goal_fn=mypkg.goals:reached num_goals=4")
        in_range(self, "controller_epsilon_min", 0.0, 1.0)
        positive(self, "success_window")
