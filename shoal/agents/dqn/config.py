"""Hyperparameters of the DQN family: DQN, Double DQN, Dueling, PER, n-step, and Ape-X.

Every variant is a flag, and the flags combine: ``double=true dueling=true prioritized=true
n_step=3`` is a Rainbow-lite (without distributional heads or noisy nets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shoal.config import in_range, positive, require


@dataclass
class DQNConfig:
    """DQN (Mnih et al. 2015) and its combinable improvements."""

    num_envs: int = 1
    """Env copies stepped by each actor."""
    train_freq: int = 64
    """Env steps (all actors together) between learner rounds; also the env steps an actor runs per iteration."""
    gradient_steps: int = 16
    """Learner steps per round of train_freq env steps (replay ratio: gradient_steps * batch_size / train_freq)."""
    learning_starts: int = 1000
    """Env steps collected before the first learner step."""
    batch_size: int = 64
    """Items per learner step."""
    buffer_size: int = 100_000
    """Replay capacity in transitions; the oldest are evicted when full."""
    gamma: float = 0.99
    """Discount factor (n-step items are discounted by gamma**n, read from the adder's discount field)."""
    n_step: int = 1
    """Steps of real reward before bootstrapping (1: one-step Q-learning)."""
    lr: float = 1e-3
    """Learning rate."""
    lr_final: float = -1.0
    """Learning rate at the end of the run, reached linearly (negative: keep lr constant)."""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """Optimiser."""
    optimizer_eps: float = 1e-8
    """Epsilon of the optimiser's denominator (Ape-X and Rainbow use about 1.5e-4 / batch for Adam)."""
    loss: Literal["huber", "mse"] = "huber"
    """TD loss: huber (quadratic within huber_delta, linear beyond) or mse."""
    huber_delta: float = 1.0
    """Where the Huber loss turns from quadratic to linear."""
    max_grad_norm: float = 10.0
    """Global gradient-norm clip (0: off)."""
    target_update_interval: int = 256
    """Learner steps between target-network updates."""
    tau: float = 1.0
    """Target update rate: 1.0 copies the online net (hard); < 1 is Polyak: target <- tau*online + (1-tau)*target."""
    double: bool = False
    """Double DQN: choose the next action with the online net, evaluate it with the target net."""
    dueling: bool = False
    """Dueling head: Q = V + A - mean(A)."""
    prioritized: bool = False
    """Prioritized replay (proportional, sum tree) with importance-sampling weights."""
    per_alpha: float = 0.6
    """Priority exponent alpha (0: uniform)."""
    per_beta: float = 0.4
    """Importance-weight exponent beta at the start of the run."""
    per_beta_final: float = 1.0
    """Importance-weight exponent at the end of the run (annealed linearly over the learner's env steps)."""
    per_eps: float = 1e-6
    """Added to |TD error| so that no priority is zero."""
    epsilon_start: float = 1.0
    """Exploration rate at the start of the run (exploration=linear)."""
    epsilon_final: float = 0.05
    """Exploration rate after exploration_fraction of the run (exploration=linear)."""
    exploration_fraction: float = 0.1
    """Fraction of the run over which epsilon falls linearly from epsilon_start to epsilon_final."""
    exploration: Literal["linear", "apex"] = "linear"
    """linear: one schedule over the global env steps; apex: actor i of N keeps eps**(1 + alpha*i/(N-1))."""
    apex_epsilon: float = 0.4
    """Base exploration rate eps of the Ape-X per-actor epsilons."""
    apex_alpha: float = 7.0
    """Exponent spread alpha of the Ape-X per-actor epsilons."""
    actor_priorities: bool = False
    """Actors compute each item's initial priority from its n-step TD error with their copy of the network (Ape-X)."""
    eval_epsilon: float = 0.0
    """Exploration rate of the evaluation policy (0: greedy)."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the MLP torso (image observations use the Nature CNN)."""
    head_hidden: int = 0
    """Width of a hidden layer in each head (0: linear heads)."""
    activation: str = "relu"
    """Hidden activation: relu, tanh, elu or silu."""
    checkpoint_replay: bool = True
    """Save the replay table in checkpoints so a resumed run continues with its data (the newest checkpoint only)."""
    frame_storage: bool = False
    """Store stacked-frame observations frame by frame (Atari: about 1/8 of the memory)."""
    actor_update_period: int = 100
    """Ape-X: vector steps an actor runs between parameter pulls."""
    batches_per_call: int = 16
    """Ape-X: batches the learner samples from the replay node per call (one round trip)."""

    def __post_init__(self) -> None:
        positive(self, "num_envs", "train_freq", "gradient_steps", "batch_size", "buffer_size", "n_step", "lr",
                 "optimizer_eps", "huber_delta", "target_update_interval", "actor_update_period", "batches_per_call")
        require(self.learning_starts >= 0, f"learning_starts must be >= 0, got {self.learning_starts}")
        require(self.batch_size <= self.buffer_size,
                f"batch_size ({self.batch_size}) must not exceed buffer_size ({self.buffer_size}); raise buffer_size")
        in_range(self, "gamma", 0.0, 1.0)
        require(0.0 < self.tau <= 1.0, f"tau must be in (0, 1] (1 = hard target update), got {self.tau}")
        require(self.max_grad_norm >= 0, f"max_grad_norm must be >= 0 (0 = off), got {self.max_grad_norm}")
        require(self.lr_final < 0 or self.lr_final <= self.lr,
                f"lr_final ({self.lr_final}) must be negative (constant lr) or at most lr ({self.lr})")
        require(self.per_alpha >= 0, f"per_alpha must be >= 0 (0 = uniform), got {self.per_alpha}")
        in_range(self, "per_beta", 0.0, 1.0)
        in_range(self, "per_beta_final", 0.0, 1.0)
        positive(self, "per_eps")
        for name in ("epsilon_start", "epsilon_final", "eval_epsilon", "apex_epsilon"):
            in_range(self, name, 0.0, 1.0)
        require(0.0 < self.exploration_fraction <= 1.0,
                f"exploration_fraction is a fraction of the run in (0, 1], got {self.exploration_fraction}")
        require(self.apex_alpha >= 0, f"apex_alpha must be >= 0, got {self.apex_alpha}")
        require(self.head_hidden >= 0, f"head_hidden must be >= 0 (0 = linear heads), got {self.head_hidden}")
        require(all(h > 0 for h in self.hidden), f"hidden sizes must be > 0, got {list(self.hidden)}")
        require(self.activation in ("tanh", "relu", "elu", "silu"),
                f"activation must be relu, tanh, elu or silu; got {self.activation!r}")


@dataclass
class ApexDQNConfig(DQNConfig):
    """Ape-X DQN (Horgan et al. 2018): many actors with their own epsilons feed one prioritized replay.

    Defaults follow the paper (double, dueling, 3-step, prioritized with actor-computed
    priorities, per-actor epsilons) scaled down for small control tasks.
    """

    n_step: int = 3
    double: bool = True
    dueling: bool = True
    prioritized: bool = True
    actor_priorities: bool = True
    exploration: Literal["linear", "apex"] = "apex"
    per_beta: float = 0.4
    per_beta_final: float = 0.4


@dataclass
class GorilaConfig(DQNConfig):
    """GORILA DQN (Nair et al. 2015): bundles of actor, replay and learner; learners push gradients to a sharded server.

    The learner settings (batch, replay ratio per bundle, n-step, Double targets) are DQN's;
    the server's optimiser and the staleness and loss filters are the gorila topology's.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        require(not self.prioritized, "gorila samples its replay uniformly, as in the paper; set prioritized=false")
