"""Hyperparameters of the tabular family: Q-learning, Sarsa, Sarsa(lambda) and Dyna-Q."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shoal.config import in_range, positive, require

Schedule = Literal["constant", "linear", "exponential"]


@dataclass
class TabularConfig:
    """Settings shared by every tabular method."""

    update: Literal["q_learning", "sarsa", "sarsa_lambda"] = "q_learning"
    """The update rule: q_learning (off-policy max target), sarsa (on-policy Q(s', a')) or sarsa_lambda."""
    alpha: float = 0.1
    """Learning rate (step size) of every Q update."""
    alpha_schedule: Literal["constant", "linear"] = "constant"
    """constant, or linear decay from alpha to alpha_final over the run."""
    alpha_final: float = 0.0
    """Step size at the end of the run when alpha_schedule=linear."""
    gamma: float = 0.99
    """Discount factor."""
    epsilon: float = 0.1
    """Probability of a uniformly random action at the start of the run (epsilon-greedy)."""
    epsilon_schedule: Schedule = "constant"
    """constant; linear to epsilon_final over the first epsilon_decay of the run; or exponential towards epsilon_final."""
    epsilon_final: float = 0.01
    """Exploration rate that linear and exponential schedules move towards."""
    epsilon_decay: float = 0.5
    """Fraction of the run the schedule takes: linear reaches epsilon_final there, exponential gets 99% of the way."""
    eval_epsilon: float = 0.0
    """Exploration rate of the evaluation policy (0: greedy, ties to the lowest action)."""
    q_init: float = 0.0
    """Initial value of every Q(s, a) (optimistic values > 0 drive exploration when rewards are <= 0)."""
    num_envs: int = 1
    """Env copies stepped by each actor (their transitions are applied one after another)."""
    rollout_length: int = 1
    """Vector steps per hand-over to the learner (1: fully online; n: the actor acts on a Q-table up to n steps old)."""

    def __post_init__(self) -> None:
        positive(self, "alpha", "num_envs", "rollout_length")
        in_range(self, "alpha", 0.0, 1.0)
        in_range(self, "alpha_final", 0.0, 1.0)
        in_range(self, "gamma", 0.0, 1.0)
        for name in ("epsilon", "epsilon_final", "eval_epsilon"):
            in_range(self, name, 0.0, 1.0)
        require(0.0 < self.epsilon_decay <= 1.0, f"epsilon_decay is a fraction of the run in (0, 1], got {self.epsilon_decay}")


@dataclass
class QLearningConfig(TabularConfig):
    """Q-learning (Watkins 1989): ``Q(s,a) += alpha (r + gamma max_a' Q(s',a') - Q(s,a))``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.update == "q_learning", f"q_learning's update must be q_learning, got {self.update!r}")


@dataclass
class SarsaConfig(TabularConfig):
    """Sarsa: ``Q(s,a) += alpha (r + gamma Q(s',a') - Q(s,a))`` with a' the action the actor takes next."""

    update: Literal["q_learning", "sarsa", "sarsa_lambda"] = "sarsa"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.update == "sarsa", f"sarsa's update must be sarsa, got {self.update!r}")


@dataclass
class SarsaLambdaConfig(TabularConfig):
    """Sarsa(lambda) with eligibility traces over every (s, a), reset at the start of each episode."""

    update: Literal["q_learning", "sarsa", "sarsa_lambda"] = "sarsa_lambda"
    lam: float = 0.9
    """Trace decay lambda: traces are multiplied by gamma * lambda after every step."""
    traces: Literal["accumulating", "replacing"] = "accumulating"
    """accumulating (e(s,a) += 1 on a visit) or replacing (e(s,a) = 1 on a visit)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.update == "sarsa_lambda", f"sarsa_lambda's update must be sarsa_lambda, got {self.update!r}")
        in_range(self, "lam", 0.0, 1.0)


@dataclass
class DynaQConfig(QLearningConfig):
    """Dyna-Q (Sutton & Barto, section 8.2): Q-learning on real steps plus planning updates from a learned model.

    The model is deterministic and tabular: the last ``(r, s', terminated)`` seen after each
    ``(s, a)``. After every real step, ``planning_steps`` Q-learning updates use transitions from
    the model, each a previously observed state drawn uniformly, then an action previously taken
    in it drawn uniformly (Figure 8.2, step (f)).
    """

    planning_steps: int = 50
    """Planning updates from the model after every real step (0: plain Q-learning)."""
    plus: bool = False
    """Dyna-Q+ (section 8.3): planning rewards get kappa*sqrt(tau), and planning draws any action of a visited state, tried or not."""
    kappa: float = 1e-3
    """Dyna-Q+ bonus scale: a planned reward is r + kappa*sqrt(tau), tau = real steps since (s, a) was last tried."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.planning_steps >= 0, f"planning_steps must be >= 0, got {self.planning_steps}; pass e.g. planning_steps=50")
        require(self.kappa >= 0.0, f"kappa must be >= 0, got {self.kappa}; pass e.g. kappa=0.001")
