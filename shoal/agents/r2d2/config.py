"""Hyperparameters of R2D2 (Kapturowski et al. 2019) and of its distributed form on the Ape-X topology.

Replay items are sequences of ``burn_in + trace_length`` timesteps written every
``sequence_period`` timesteps (0: half the trained part, ``trace_length // 2``: the paper's
80 trained timesteps every 40, after 40 of burn-in). Sizes counted in
items (``batch_size``, ``buffer_size``) count sequences; ``train_freq`` and
``learning_starts`` count env steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shoal.config import in_range, positive, require


@dataclass
class R2D2Config:
    """R2D2: a recurrent Q-network learned from stored-state sequences with burn-in, n-step Double Q and value rescaling."""

    num_envs: int = 4
    """Env copies stepped by each actor (each carries its own LSTM state)."""
    train_freq: int = 16
    """Env steps (all actors together) between learner rounds; also the env steps an actor runs per iteration."""
    gradient_steps: int = 1
    """Learner steps per round of train_freq env steps."""
    learning_starts: int = 2000
    """Env steps collected before the first learner step."""
    batch_size: int = 32
    """Sequences per learner step."""
    buffer_size: int = 5000
    """Replay capacity in sequences; the oldest are evicted when full."""
    burn_in: int = 20
    """Leading timesteps of each sequence that only refresh the stored recurrent state (no loss, no gradient)."""
    trace_length: int = 40
    """Timesteps of each sequence after the burn-in that the loss is computed on."""
    sequence_period: int = 0
    """Timesteps between the starts of consecutive sequences of an episode (0: trace_length // 2); at most
    trace_length - 1, so that consecutive sequences leave no transition untrained."""
    gamma: float = 0.99
    """Discount factor."""
    n_step: int = 5
    """Steps of real reward before bootstrapping (shortened at a sequence's end)."""
    value_rescaling: bool = True
    """Learn h(Q) with h(x) = sign(x)(sqrt(|x|+1)-1) + eps*x instead of clipping rewards."""
    rescale_eps: float = 1e-3
    """The eps of the value rescaling h."""
    lr: float = 1e-3
    """Learning rate (Adam)."""
    optimizer_eps: float = 1e-3
    """Epsilon of Adam's denominator (the paper uses 1e-3)."""
    loss: Literal["mse", "huber"] = "mse"
    """TD loss per timestep: mse ((target - q)**2 / 2) or huber."""
    huber_delta: float = 1.0
    """Where the Huber loss turns from quadratic to linear."""
    max_grad_norm: float = 40.0
    """Global gradient-norm clip (0: off)."""
    target_update_period: int = 250
    """Learner steps between copies of the online network into the target network."""
    dueling: bool = True
    """Dueling head: Q = V + A - mean(A)."""
    prioritized: bool = True
    """Prioritized sequence replay with importance-sampling weights."""
    per_alpha: float = 0.9
    """Priority exponent alpha (0: uniform)."""
    per_beta: float = 0.6
    """Importance-weight exponent beta at the start of the run."""
    per_beta_final: float = 0.6
    """Importance-weight exponent at the end of the run (annealed linearly over the learner steps)."""
    per_eta: float = 0.9
    """Sequence priority mix: eta * max|td| + (1 - eta) * mean|td| over the sequence's trained timesteps."""
    per_eps: float = 1e-6
    """Added to every priority so that none is zero."""
    epsilon_start: float = 1.0
    """Exploration rate at the start of the run (exploration=linear)."""
    epsilon_final: float = 0.01
    """Exploration rate after exploration_fraction of the run (exploration=linear)."""
    exploration_fraction: float = 0.1
    """Fraction of the run over which epsilon falls linearly from epsilon_start to epsilon_final."""
    exploration: Literal["linear", "apex"] = "linear"
    """linear: one schedule over the global env steps; apex: env copy k of all N = num_actors * num_envs
    (copy j of actor i: k = i * num_envs + j) keeps eps**(1 + alpha*k/(N-1))."""
    apex_epsilon: float = 0.4
    """Base exploration rate eps of the per-copy epsilons (exploration=apex)."""
    apex_alpha: float = 7.0
    """Exponent spread alpha of the per-copy epsilons (exploration=apex)."""
    actor_priorities: bool = False
    """Actors compute each sequence's initial priority with their copy of the network (distributed R2D2)."""
    eval_epsilon: float = 0.0
    """Exploration rate of the evaluation policy (0: greedy)."""
    encoder: tuple[int, ...] = (64,)
    """Hidden sizes of the MLP encoder before the LSTM (empty: none)."""
    lstm_hidden: int = 64
    """LSTM units."""
    activation: str = "relu"
    """Activation of the encoder and head layers: relu, tanh, elu or silu."""
    checkpoint_replay: bool = True
    """Save the replay table in checkpoints so a resumed run continues with its data (the newest checkpoint only)."""
    actor_update_period: int = 100
    """Ape-X topology: vector steps an actor runs between parameter pulls."""
    batches_per_call: int = 8
    """Ape-X topology: batches the learner samples from the replay node per call (one round trip)."""

    @property
    def sequence_length(self) -> int:
        """Timesteps per replay item: burn_in + trace_length."""
        return self.burn_in + self.trace_length

    @property
    def period(self) -> int:
        """Timesteps between sequence starts (sequence_period, or ``max(1, trace_length // 2)`` when 0)."""
        return self.sequence_period or max(1, self.trace_length // 2)

    def __post_init__(self) -> None:
        positive(self, "num_envs", "train_freq", "gradient_steps", "batch_size", "buffer_size", "trace_length",
                 "n_step", "lr", "optimizer_eps", "huber_delta", "target_update_period", "rescale_eps",
                 "lstm_hidden", "actor_update_period", "batches_per_call")
        require(self.burn_in >= 0, f"burn_in must be >= 0, got {self.burn_in}")
        require(self.trace_length >= 2, f"trace_length must be >= 2 timesteps (one transition and its next "
                f"observation), got {self.trace_length}")
        require(0 <= self.sequence_period <= self.trace_length - 1,
                f"sequence_period must be in [0, trace_length - 1 = {self.trace_length - 1}] (0: trace_length // 2) "
                f"so that every transition is trained on, got {self.sequence_period}")
        require(self.n_step < self.trace_length,
                f"n_step ({self.n_step}) must be below trace_length ({self.trace_length}) so that some transitions "
                f"get full n-step returns; lower n_step or raise trace_length")
        require(self.learning_starts >= 0, f"learning_starts must be >= 0, got {self.learning_starts}")
        require(self.batch_size <= self.buffer_size,
                f"batch_size ({self.batch_size}) must not exceed buffer_size ({self.buffer_size}); raise buffer_size")
        in_range(self, "gamma", 0.0, 1.0)
        require(self.max_grad_norm >= 0, f"max_grad_norm must be >= 0 (0 = off), got {self.max_grad_norm}")
        require(self.per_alpha >= 0, f"per_alpha must be >= 0 (0 = uniform), got {self.per_alpha}")
        for name in ("per_beta", "per_beta_final", "per_eta", "epsilon_start", "epsilon_final", "eval_epsilon",
                     "apex_epsilon"):
            in_range(self, name, 0.0, 1.0)
        positive(self, "per_eps")
        require(0.0 < self.exploration_fraction <= 1.0,
                f"exploration_fraction is a fraction of the run in (0, 1], got {self.exploration_fraction}")
        require(self.apex_alpha >= 0, f"apex_alpha must be >= 0, got {self.apex_alpha}")
        require(all(h > 0 for h in self.encoder), f"encoder sizes must be > 0, got {list(self.encoder)}")
        require(self.activation in ("tanh", "relu", "elu", "silu"),
                f"activation must be relu, tanh, elu or silu; got {self.activation!r}")
        require(self.exploration in ("linear", "apex"),
                f"exploration must be linear or apex, got {self.exploration!r}")
        require(self.loss in ("mse", "huber"), f"loss must be mse or huber, got {self.loss!r}")


@dataclass
class ApexR2D2Config(R2D2Config):
    """Distributed R2D2: N actors with the Ape-X epsilons and actor-computed sequence priorities feed one replay."""

    exploration: Literal["linear", "apex"] = "apex"
    actor_priorities: bool = True
