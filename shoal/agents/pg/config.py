"""Hyperparameters of the actor-critic family (PPO and A2C share one learner)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from shoal.config import in_range, positive, require


@dataclass
class ActorCriticConfig:
    """Settings shared by PPO and A2C."""

    loss: Literal["clip", "kl_penalty", "a2c"] = "clip"
    """Policy objective: PPO clipped surrogate, PPO adaptive KL penalty, or the plain A2C gradient."""
    num_envs: int = 8
    """Env copies stepped by each actor."""
    rollout_length: int = 32
    """Steps per env copy between updates (the rollout is [rollout_length, num_envs * num_actors])."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda (1.0: Monte-Carlo advantages, 0.0: one-step TD)."""
    advantages: Literal["gae", "vtrace"] = "gae"
    """Advantages and value targets: GAE (on-policy), or V-trace, which corrects for acting with older parameters."""
    vtrace_clip_rho: float = 1.0
    """V-trace rho-bar: clip of the importance weight in the value target."""
    vtrace_clip_c: float = 1.0
    """V-trace c-bar: clip of the trace-cutting weights."""
    vtrace_clip_pg_rho: float = 1.0
    """V-trace clip of the importance weight in the policy-gradient advantage."""
    vtrace_lambda: float = 1.0
    """V-trace lambda: scales the trace-cutting weights (1.0: the paper's V-trace)."""
    lr: float = 3e-4
    """Learning rate."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """constant, or linear decay to 0 over the run."""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """Optimiser."""
    optimizer_eps: float = 1e-5
    """Epsilon of the optimiser's denominator."""
    epochs: int = 10
    """Passes over each rollout."""
    minibatch_size: int = 64
    """Samples per gradient step (0: the whole rollout)."""
    clip: float = 0.2
    """PPO clip range epsilon (loss=clip)."""
    clip_schedule: Literal["constant", "linear"] = "constant"
    """constant, or linear decay of the clip range to 0 over the run."""
    kl_target: float = 0.01
    """Target KL d for the adaptive penalty (loss=kl_penalty): beta halves below d/1.5, doubles above 1.5d."""
    kl_beta: float = 1.0
    """Initial KL penalty coefficient beta (loss=kl_penalty)."""
    vf_coef: float = 0.5
    """Value loss weight."""
    ent_coef: float = 0.0
    """Entropy bonus weight."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip (0: off)."""
    normalize_advantages: bool = True
    """Standardise advantages per minibatch."""
    clip_value_loss: bool = False
    """Clip the value update around the old values with the same clip range."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the policy and value MLPs."""
    activation: str = "tanh"
    """Hidden activation: tanh, relu, elu or silu."""
    shared_torso: bool = False
    """One torso for policy and value (always true for image observations)."""
    log_std_init: float = 0.0
    """Initial log standard deviation of Gaussian policies."""
    normalize_obs: bool = False
    """Normalise observations with running statistics (saved in the checkpoint)."""
    normalize_reward: bool = False
    """Scale rewards by the running std of the discounted return."""
    compile: bool = False
    """torch.compile the learner's network (pays on long runs only: compiling takes seconds)."""
    recurrent: bool = False
    """An LSTM policy (PPO and A2C on the local topology): the actor carries its state across steps and rollouts."""
    lstm_hidden: int = 64
    """LSTM units (recurrent=true); the ``hidden`` MLP layers then sit between the LSTM and each head."""
    lstm_layers: int = 1
    """Stacked LSTM layers (recurrent=true)."""
    critic_lstm: bool = True
    """A separate LSTM for the value (recurrent=true); false: the value head reads the policy's LSTM."""
    sequence_length: int = 0
    """Steps per training sequence (recurrent=true; 0: whole rollout columns); must divide rollout_length."""

    #: Whether this algorithm's topologies can carry an LSTM state (PPO and A2C: the local topology).
    supports_recurrent: ClassVar[bool] = False

    def __post_init__(self) -> None:
        positive(self, "num_envs", "rollout_length", "lr", "epochs", "optimizer_eps")
        in_range(self, "gamma", 0.0, 1.0)
        in_range(self, "gae_lambda", 0.0, 1.0)
        require(self.minibatch_size >= 0, f"minibatch_size must be >= 0 (0 = whole rollout), got {self.minibatch_size}")
        require(self.clip > 0, f"clip must be > 0, got {self.clip}")
        positive(self, "kl_target", "kl_beta")
        require(self.vf_coef >= 0 and self.ent_coef >= 0, "vf_coef and ent_coef must be >= 0")
        require(self.max_grad_norm >= 0, f"max_grad_norm must be >= 0 (0 = off), got {self.max_grad_norm}")
        require(all(h > 0 for h in self.hidden), f"hidden sizes must be > 0, got {list(self.hidden)}")
        require(self.advantages in ("gae", "vtrace"), f"advantages must be gae or vtrace, got {self.advantages!r}")
        positive(self, "vtrace_clip_rho", "vtrace_clip_c", "vtrace_clip_pg_rho")
        in_range(self, "vtrace_lambda", 0.0, 1.0)
        require(self.activation in ("tanh", "relu", "elu", "silu"), f"activation must be tanh, relu, elu or silu; got {self.activation!r}")
        if self.recurrent:
            self._check_recurrent()

    def _check_recurrent(self) -> None:
        name = type(self).__name__.removesuffix("Config").lower()
        require(self.supports_recurrent, f"{name} has no recurrent variant (recurrent=true is for ppo and a2c); "
                "drop recurrent or train ppo/a2c")
        positive(self, "lstm_hidden", "lstm_layers")
        L = self.sequence_length or self.rollout_length
        require(0 < L <= self.rollout_length and self.rollout_length % L == 0,
                f"sequence_length={self.sequence_length} must divide rollout_length={self.rollout_length} "
                "(0: whole rollout columns)")
        require(self.minibatch_size % L == 0, f"minibatch_size={self.minibatch_size} must be a multiple of the "
                f"sequence length {L} with recurrent=true (minibatches are whole sequences)")


    @property
    def one_gradient_per_update(self) -> bool:
        """Whether one gradient of one rollout is one whole update (so a gradient can travel as a value)."""
        return self.epochs == 1 and self.minibatch_size == 0 and not self.normalize_obs

@dataclass
class PPOConfig(ActorCriticConfig):
    """PPO (Schulman et al. 2017): clipped surrogate or adaptive KL penalty."""

    supports_recurrent = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.loss in ("clip", "kl_penalty"), f"ppo loss must be clip or kl_penalty, got {self.loss!r}")


@dataclass
class A2CConfig(ActorCriticConfig):
    """A2C: synchronous advantage actor-critic, one gradient step per rollout."""

    supports_recurrent = True

    loss: Literal["clip", "kl_penalty", "a2c"] = "a2c"
    rollout_length: int = 5
    lr: float = 7e-4
    optimizer: Literal["adam", "rmsprop"] = "rmsprop"
    epochs: int = 1
    minibatch_size: int = 0
    gae_lambda: float = 1.0
    normalize_advantages: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.loss == "a2c", f"a2c loss must be a2c, got {self.loss!r}")


@dataclass
class ImpalaConfig(ActorCriticConfig):
    """IMPALA (Espeholt et al. 2018): actor-critic on V-trace targets, for actors acting with older parameters."""

    loss: Literal["clip", "kl_penalty", "a2c"] = "a2c"
    advantages: Literal["gae", "vtrace"] = "vtrace"
    num_envs: int = 8
    rollout_length: int = 32
    lr: float = 1e-3
    epochs: int = 1
    minibatch_size: int = 0
    gae_lambda: float = 1.0
    ent_coef: float = 0.01
    max_grad_norm: float = 40.0
    normalize_advantages: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__.removesuffix("Config").lower()
        require(self.loss == "a2c", f"{name} loss must be a2c (appo has the clipped objective), got {self.loss!r}")


@dataclass
class APPOConfig(ActorCriticConfig):
    """APPO: PPO's clipped surrogate on V-trace advantages (the ratio is against the behaviour policy)."""

    advantages: Literal["gae", "vtrace"] = "vtrace"
    rollout_length: int = 32
    lr: float = 1e-3
    epochs: int = 2
    minibatch_size: int = 128
    gae_lambda: float = 1.0
    ent_coef: float = 0.005

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.loss == "clip", f"appo loss must be clip, got {self.loss!r}")


@dataclass
class A3CConfig(ActorCriticConfig):
    """A3C (Mnih et al. 2016): n-step actor-critic gradients computed by workers, applied asynchronously."""

    loss: Literal["clip", "kl_penalty", "a2c"] = "a2c"
    num_envs: int = 4
    rollout_length: int = 8
    lr: float = 1e-3
    optimizer: Literal["adam", "rmsprop"] = "adam"
    epochs: int = 1
    minibatch_size: int = 0
    gae_lambda: float = 1.0
    ent_coef: float = 0.01
    normalize_advantages: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.loss == "a2c", f"a3c loss must be a2c, got {self.loss!r}")
        require(self.one_gradient_per_update, "a3c workers push one gradient per rollout: keep epochs=1, "
                "minibatch_size=0 and normalize_obs=false")


@dataclass
class GA3CConfig(ImpalaConfig):
    """GA3C: A3C's n-step actor-critic loss (no V-trace), trained by one batching trainer fed by a prediction queue."""

    advantages: Literal["gae", "vtrace"] = "gae"


@dataclass
class DPPOConfig(ActorCriticConfig):
    """DPPO (Heess et al. 2017): workers compute PPO gradients, a chief averages them synchronously.

    Each gradient is one full-batch pass over a worker's rollout; the topology's
    ``rounds_per_rollout`` synchronous rounds take the place of PPO's epochs.
    """

    loss: Literal["clip", "kl_penalty", "a2c"] = "clip"
    num_envs: int = 4
    rollout_length: int = 64
    lr: float = 1e-3
    epochs: int = 1
    minibatch_size: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.loss in ("clip", "kl_penalty"), f"dppo loss must be clip or kl_penalty, got {self.loss!r}")
        require(self.one_gradient_per_update, "dppo workers push one full-batch gradient per round: keep epochs=1, "
                "minibatch_size=0 and normalize_obs=false (the topology's rounds_per_rollout plays epochs)")
