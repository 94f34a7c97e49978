"""Settings of the offline learners: behaviour cloning, CQL, and naive offline DQN/SAC.

A run's ``steps`` are learner updates (there are no env steps in offline training); the
env is touched only by evaluation. ``cql``, ``offline_dqn`` and ``offline_sac`` are one
learner: the DQN learner (discrete actions) or the SAC learner (continuous actions) with
the CQL(H) regulariser weighted by ``cql_alpha``; the naive offline forms fix that weight at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shoal.config import positive, require


@dataclass
class OfflineConfig:
    """What every offline learner shares: the dataset, the networks, batches."""

    dataset: str = ""
    """Minari dataset id or folder to learn from (``shoal train ALGO --dataset ...`` sets it)."""
    validation: float = 0.0
    """Fraction of the dataset's episodes held out for validation (0: none)."""
    batch_size: int = 256
    """Transitions per learner update."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of every network."""
    activation: str = "relu"
    """Hidden activation: relu, tanh, elu or silu."""
    gamma: float = 0.99
    """Discount of the TD targets (unused by behaviour cloning)."""
    updates_per_iteration: int = 500
    """Learner updates per runner iteration (the granularity of logging, evaluation and checkpoints)."""

    def __post_init__(self) -> None:
        positive(self, "batch_size", "updates_per_iteration")
        require(0.0 <= self.validation < 1.0, f"validation must be in [0, 1), got {self.validation}")
        require(0.0 <= self.gamma <= 1.0, f"gamma must be in [0, 1], got {self.gamma}")
        require(len(self.hidden) > 0 and all(h > 0 for h in self.hidden),
                f"hidden must be positive layer sizes, got {list(self.hidden)}")


@dataclass
class BCConfig(OfflineConfig):
    """Behaviour cloning: cross-entropy to the dataset's discrete actions, or a tanh-bounded fit to continuous ones."""

    validation: float = 0.1
    """Fraction of the dataset's episodes held out; early stopping watches their loss."""
    lr: float = 1e-3
    """Adam learning rate."""
    loss: Literal["nll", "mse"] = "nll"
    """Continuous actions: nll (negative log-likelihood of the tanh-Gaussian) or mse (to tanh(mean))."""
    validate_every: int = 250
    """Updates between validation-loss checks."""
    patience: int = 8
    """Checks without a better validation loss before training stops (0: never stop early)."""
    min_delta: float = 1e-4
    """How much lower a validation loss must be to count as better."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "lr", "validate_every")
        require(self.patience >= 0, f"patience must be >= 0, got {self.patience}")
        require(self.patience == 0 or self.validation > 0,
                "early stopping (patience > 0) needs a validation split; set validation=0.1 or patience=0")


@dataclass
class CQLConfig(OfflineConfig):
    """Conservative Q-learning (Kumar et al. 2020), CQL(H): DQN for discrete actions, SAC for continuous ones."""

    cql_alpha: float | None = None
    """Weight of the CQL(H) regulariser (None: 1.0 for discrete actions, 5.0 for continuous; 0: naive offline RL)."""
    lr: float = 3e-4
    """Discrete: Adam learning rate of the Q-network."""
    double: bool = True
    """Discrete: Double-DQN targets."""
    loss: Literal["huber", "mse"] = "mse"
    """Discrete: TD loss (the regulariser is added to it)."""
    target_update_interval: int = 100
    """Discrete: updates between hard copies of the Q-network into its target."""
    max_grad_norm: float = 10.0
    """Discrete: clip the gradient norm to this (0: off)."""
    actor_lr: float = 1e-4
    """Continuous: policy learning rate (the CQL paper's 1e-4)."""
    critic_lr: float = 3e-4
    """Continuous: critics' learning rate."""
    alpha_lr: float = 3e-4
    """Continuous: learning rate of SAC's temperature (and of the Lagrange multiplier)."""
    tau: float = 0.005
    """Continuous: Polyak rate of the target critics."""
    num_sampled_actions: int = 10
    """Continuous: actions drawn per state from each proposal (uniform, pi(.|s), pi(.|s')) for the logsumexp."""
    importance_sample: bool = True
    """Continuous: weight each sampled action by its proposal's density in the logsumexp (false: plain logsumexp)."""
    bc_steps: int = 0
    """Continuous: updates whose policy step is behaviour cloning, as the authors' policy_eval_start (critics learn as always)."""
    lagrange: bool = False
    """Continuous: tune the regulariser's weight by dual descent so the gap tracks target_action_gap."""
    target_action_gap: float = 10.0
    """Continuous, with lagrange: the gap logsumexp - Q(s, a_data) the multiplier aims for (the paper's tau)."""
    normalize_obs: bool = False
    """Continuous: normalise observations with running statistics of the batches."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.cql_alpha is None or self.cql_alpha >= 0, f"cql_alpha must be >= 0, got {self.cql_alpha}")
        require(self.bc_steps >= 0, f"bc_steps must be >= 0, got {self.bc_steps}")
        positive(self, "lr", "target_update_interval", "actor_lr", "critic_lr", "alpha_lr", "num_sampled_actions")
        require(0 < self.tau <= 1, f"tau must be in (0, 1], got {self.tau}")

    def alpha_for(self, discrete: bool) -> float:
        """The regulariser weight in force for a discrete or continuous action space."""
        if self.cql_alpha is not None:
            return float(self.cql_alpha)
        return 1.0 if discrete else 5.0


@dataclass
class NaiveOfflineConfig(CQLConfig):
    """Naive offline DQN or SAC: the CQL learner with the regulariser's weight fixed at 0."""

    cql_alpha: float | None = 0.0
    """Fixed at 0: the plain TD learner on the dataset."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.cql_alpha == 0.0, f"naive offline learners have no CQL term; got cql_alpha={self.cql_alpha}, "
                "use `shoal train cql` for a positive weight")
        require(not self.lagrange, "naive offline learners have no CQL term to tune; drop lagrange=true")
