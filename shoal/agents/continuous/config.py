"""Hyperparameters of the continuous-control family: DDPG, TD3, SAC and D4PG.

Actions: every network works in ``[-1, 1]`` per action dimension; the actor rescales to
the env's bounds just before stepping, and replay stores the ``[-1, 1]`` action. Noise
scales (``noise_sigma``, ``target_noise``, ...) are therefore fractions of half the
action range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shoal.config import in_range, positive, require


@dataclass
class OffPolicyConfig:
    """Settings every continuous off-policy agent shares (replay, updates, networks)."""

    num_envs: int = 1
    """Env copies stepped by each actor."""
    rollout_length: int = 1
    """Vector steps each actor runs between hand-overs to the learner."""
    gamma: float = 0.99
    """Discount factor."""
    n_step: int = 1
    """Steps summed into each transition's return (n-step targets; 1: one-step TD)."""
    tau: float = 0.005
    """Polyak rate of the target networks: target <- (1 - tau) * target + tau * online."""
    actor_lr: float = 1e-3
    """Learning rate of the policy network."""
    critic_lr: float = 1e-3
    """Learning rate of the critic(s)."""
    adam_eps: float = 1e-8
    """Epsilon of Adam's denominator."""
    batch_size: int = 256
    """Transitions per gradient step."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions (oldest evicted first)."""
    learning_starts: int = 1000
    """Env steps (all actors together) collected before the first gradient step."""
    random_warmup: bool = True
    """Act uniformly at random until learning starts (else use the untrained policy plus noise)."""
    replay_ratio: float = 1.0
    """Gradient steps per env step once learning has started (the update-to-data ratio)."""
    prioritized: bool = False
    """Prioritized replay (proportional, sum tree) instead of uniform."""
    priority_alpha: float = 0.6
    """Priority exponent alpha of prioritized replay."""
    priority_beta: float = 0.4
    """Initial importance-weight exponent beta, annealed linearly to 1 over the run."""
    priority_eps: float = 1e-6
    """Added to |TD error| so no priority is zero."""
    actor_priorities: bool = False
    """Actors compute initial priorities from their own n-step TD errors (Ape-X); needs prioritized."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the policy and of each critic."""
    activation: str = "relu"
    """Hidden activation: relu, tanh, elu or silu."""
    max_grad_norm: float = 0.0
    """Clip each network's gradient norm to this (0: off)."""
    normalize_obs: bool = False
    """Normalise observations with running statistics of the replayed batches (saved with the weights)."""
    checkpoint_replay: bool = True
    """Save the replay table in checkpoints so a resumed run continues exactly (the newest checkpoint only)."""
    actor_update_period: int = 100
    """Ape-X topology: vector steps an actor runs between parameter pulls."""
    batches_per_call: int = 16
    """Ape-X topology: batches the learner samples from the replay node per call."""

    def __post_init__(self) -> None:
        positive(self, "num_envs", "rollout_length", "n_step", "actor_lr", "critic_lr", "adam_eps",
                 "batch_size", "buffer_size", "replay_ratio", "actor_update_period", "batches_per_call")
        in_range(self, "gamma", 0.0, 1.0)
        in_range(self, "tau", 0.0, 1.0)
        require(self.tau > 0, f"tau must be > 0 (the targets would never move), got {self.tau}; 0.005 is usual")
        require(self.learning_starts >= 0, f"learning_starts must be >= 0, got {self.learning_starts}")
        require(self.priority_alpha >= 0, f"priority_alpha must be >= 0, got {self.priority_alpha}; 0.6 as in PER")
        in_range(self, "priority_beta", 0.0, 1.0)
        require(self.priority_eps > 0, f"priority_eps must be > 0, got {self.priority_eps}; e.g. 1e-6")
        require(not self.actor_priorities or self.prioritized,
                "actor_priorities=true needs prioritized=true; actors' priorities would be ignored by uniform replay")
        require(len(self.hidden) > 0 and all(h > 0 for h in self.hidden),
                f"hidden must list at least one positive layer size, got {list(self.hidden)}; e.g. hidden=[256,256]")
        require(self.activation in ("relu", "tanh", "elu", "silu"),
                f"activation must be relu, tanh, elu or silu; got {self.activation!r}")
        require(self.max_grad_norm >= 0, f"max_grad_norm must be >= 0 (0 = off), got {self.max_grad_norm}")


@dataclass
class DDPGConfig(OffPolicyConfig):
    """DDPG (Lillicrap et al. 2016): deterministic policy, one critic, target networks, exploration noise."""

    noise: Literal["gaussian", "ou"] = "gaussian"
    """Exploration noise added to the policy's action: gaussian, or ou (Ornstein-Uhlenbeck, per env copy)."""
    noise_sigma: float = 0.1
    """Standard deviation of the exploration noise (in [-1, 1] action units)."""
    ou_theta: float = 0.15
    """Mean-reversion rate of the Ornstein-Uhlenbeck noise."""
    ou_dt: float = 0.01
    """Time step of the Ornstein-Uhlenbeck process."""
    actor_noise_alpha: float = 0.0
    """Spread of noise over actors (Ape-X): actor i of N uses sigma**(1 + alpha * i / (N - 1)); 0: all use sigma."""
    num_critics: int = 1
    """Critics trained side by side; the target takes their minimum (1: DDPG, 2: TD3's clipped double Q)."""
    policy_delay: int = 1
    """Critic updates per policy (and target) update (TD3: 2)."""
    target_noise: float = 0.0
    """Std of the noise added to target actions (TD3's target policy smoothing; 0: off)."""
    target_noise_clip: float = 0.5
    """The target-action noise is clipped to +-this."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.noise_sigma >= 0, f"noise_sigma must be >= 0, got {self.noise_sigma}; 0.1 is usual")
        positive(self, "ou_theta", "ou_dt")
        require(self.actor_noise_alpha >= 0, f"actor_noise_alpha must be >= 0, got {self.actor_noise_alpha}")
        require(self.actor_noise_alpha == 0 or self.noise_sigma < 1,
                f"actor_noise_alpha > 0 spreads sigma**(1 + ...) and needs noise_sigma < 1, got {self.noise_sigma}")
        require(self.num_critics >= 1, f"num_critics must be >= 1, got {self.num_critics}")
        require(self.policy_delay >= 1, f"policy_delay must be >= 1, got {self.policy_delay}")
        require(self.target_noise >= 0, f"target_noise must be >= 0 (0 = off), got {self.target_noise}")
        require(self.target_noise_clip >= 0, f"target_noise_clip must be >= 0, got {self.target_noise_clip}")


@dataclass
class TD3Config(DDPGConfig):
    """TD3 (Fujimoto et al. 2018): twin critics, target policy smoothing, delayed policy updates."""

    num_critics: int = 2
    policy_delay: int = 2
    target_noise: float = 0.2
    target_noise_clip: float = 0.5


@dataclass
class ApexDDPGConfig(DDPGConfig):
    """Ape-X DPG (Horgan et al. 2018): a DDPG learner on prioritized n-step replay fed by many actors,
    each exploring with its own noise scale and computing its items' initial priorities."""

    n_step: int = 3
    prioritized: bool = True
    actor_priorities: bool = True
    noise_sigma: float = 0.3
    actor_noise_alpha: float = 1.5


@dataclass
class D4PGConfig(DDPGConfig):
    """D4PG (Barth-Maron et al. 2018): DDPG with a categorical distributional critic on n-step,
    prioritized replay; the policy climbs the mean of the critic's distribution.

    The critic's atoms should cover the discounted returns the env can produce: with rewards
    in ``[r_min, r_max]`` every return lies in ``[r_min, r_max] / (1 - gamma)``. Targets outside
    ``[v_min, v_max]`` are clipped onto the end atoms.
    """

    n_step: int = 5
    prioritized: bool = True
    noise_sigma: float = 0.3
    num_atoms: int = 51
    """Atoms of the critic's categorical distribution, evenly spaced on [v_min, v_max]."""
    v_min: float = -150.0
    """Lowest atom: the smallest return the critic can represent."""
    v_max: float = 150.0
    """Highest atom: the largest return the critic can represent."""
    target_update_period: int = 0
    """Copy the online networks into the targets every this many policy updates (Acme: 100); 0: Polyak with tau."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_atoms >= 2, f"num_atoms must be >= 2, got {self.num_atoms}; 51 as in C51 and D4PG")
        require(self.v_max > self.v_min, f"v_max must be > v_min, got v_min={self.v_min}, v_max={self.v_max}; "
                "choose a range covering the env's discounted returns")
        require(self.num_critics == 1, f"D4PG has one distributional critic, got num_critics={self.num_critics}; "
                "set num_critics=1")
        require(self.target_update_period >= 0,
                f"target_update_period must be >= 0 (0 = Polyak with tau), got {self.target_update_period}")


@dataclass
class ApexD4PGConfig(D4PGConfig):
    """D4PG on the Ape-X topology: many actors, each with its own noise scale, computing their items'
    initial priorities (cross-entropies) for the one prioritized replay."""

    actor_priorities: bool = True
    actor_noise_alpha: float = 1.5


@dataclass
class SACConfig(OffPolicyConfig):
    """SAC (Haarnoja et al. 2018): tanh-squashed Gaussian policy, twin critics, learned temperature."""

    num_critics: int = 2
    """Critics trained side by side; targets and the policy use their minimum."""
    alpha: float = 1.0
    """Initial entropy temperature (the fixed one when autotune=false)."""
    autotune: bool = True
    """Learn the temperature so the policy's entropy tracks target_entropy."""
    alpha_lr: float = 1e-3
    """Learning rate of log(alpha)."""
    target_entropy: float | None = None
    """Entropy the temperature steers towards (None: -act_dim)."""
    policy_delay: int = 1
    """Critic updates per policy and temperature update."""
    target_every: int = 1
    """Gradient steps between Polyak updates of the target critics."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_critics >= 1, f"num_critics must be >= 1, got {self.num_critics}")
        positive(self, "alpha", "alpha_lr", "policy_delay", "target_every")
