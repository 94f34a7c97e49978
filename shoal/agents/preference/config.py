"""Settings of reward learning from preferences, and the SAC and PPO configs that carry them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from shoal.agents.continuous.config import SACConfig
from shoal.agents.pg.config import PPOConfig
from shoal.config import in_range, positive, require


@dataclass
class PreferenceFields:
    """The reward model, its labels and the schedule they are asked for on (Christiano et al. 2017)."""

    preference_source: Literal["oracle", "terminal"] = "oracle"
    """Who labels segment pairs: oracle (prefers the higher true return) or terminal (a person types 1, 2 or =)."""
    max_labels: int = 1000
    """Total labels asked for over the run."""
    initial_labels: int = 100
    """Labels asked for at the first query (once learning starts), before any RL on the learned reward."""
    label_every: int = 1000
    """Env steps between label queries."""
    label_decay_steps: int = 5000
    """tau of the label rate tau / (tau + t): smaller spends more of the budget early."""
    label_horizon: int = 0
    """Env step by which the whole budget is spent (0: the run's total steps)."""
    segment_length: int = 25
    """Steps per labelled segment."""
    segment_memory: int = 20000
    """Recent transitions segments are drawn from."""
    candidate_factor: int = 10
    """Candidate pairs drawn per label asked for; the ones the ensemble disagrees on most are asked."""
    ensemble_size: int = 3
    """Reward networks in the ensemble, each trained on its own bootstrap of the labels."""
    reward_hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of each reward network."""
    reward_activation: str = "relu"
    """Hidden activation of the reward networks: relu, tanh, elu or silu."""
    reward_lr: float = 1e-3
    """Adam learning rate of the reward networks."""
    reward_l2: float = 3e-4
    """Coefficient of the L2 penalty on each reward network's weights, added to that network's own loss."""
    reward_batch_size: int = 64
    """Labelled pairs per reward-model gradient step (per member)."""
    reward_updates: int = 200
    """Reward-model gradient steps after each batch of new labels."""
    response_noise: float = 0.0
    """Probability the loss assumes a rater answered at random (the paper: 0.1; 0: off)."""
    reward_scale: float = 1.0
    """Std of the normalised learned reward the RL learner sees (mean 0)."""
    heldout_segments: int = 256
    """Fresh segments drawn after each retraining to measure how well learned and true segment returns correlate."""
    oracle_noise: float = 0.0
    """Oracle only: probability an answer is a uniformly random 1 or 2."""
    oracle_tie_margin: float = 0.0
    """Oracle only: true returns closer than this are labelled equal."""

    def check_preference(self) -> None:
        """Validate the preference settings (called by the configs' ``__post_init__``)."""
        positive(self, "max_labels", "initial_labels", "label_every", "label_decay_steps", "segment_length",
                 "segment_memory", "candidate_factor", "ensemble_size", "reward_lr", "reward_batch_size",
                 "reward_updates", "reward_scale", "heldout_segments")
        require(self.heldout_segments >= 2, f"heldout_segments must be >= 2 (they are compared in pairs), "
                f"got {self.heldout_segments}")
        require(self.preference_source in ("oracle", "terminal"),
                f"preference_source must be oracle or terminal, got {self.preference_source!r}")
        require(self.initial_labels <= self.max_labels,
                f"initial_labels={self.initial_labels} exceeds max_labels={self.max_labels}; lower it")
        require(self.label_horizon >= 0, f"label_horizon must be >= 0 (0: the run's steps), got {self.label_horizon}")
        require(self.segment_memory >= 2 * self.segment_length,
                f"segment_memory={self.segment_memory} must hold at least two segments of {self.segment_length} steps")
        require(len(self.reward_hidden) > 0 and all(h > 0 for h in self.reward_hidden),
                f"reward_hidden must list positive layer sizes, got {list(self.reward_hidden)}; e.g. [64, 64]")
        require(self.reward_activation in ("relu", "tanh", "elu", "silu"),
                f"reward_activation must be relu, tanh, elu or silu; got {self.reward_activation!r}")
        require(self.reward_l2 >= 0, f"reward_l2 must be >= 0, got {self.reward_l2}")
        in_range(self, "response_noise", 0.0, 0.99)
        in_range(self, "oracle_noise", 0.0, 1.0)
        require(self.oracle_tie_margin >= 0, f"oracle_tie_margin must be >= 0, got {self.oracle_tie_margin}")


@dataclass
class PrefSACConfig(SACConfig, PreferenceFields):
    """SAC trained on a reward learned from preferences instead of the env's reward."""

    def __post_init__(self) -> None:
        SACConfig.__post_init__(self)
        self.check_preference()
        require(self.n_step == 1, f"pref_sac relabels one-step transitions with r(s, a); got n_step={self.n_step}, "
                "set n_step=1")
        require(not self.actor_priorities, "pref_sac's actors would compute priorities from the env's reward; "
                "set actor_priorities=false (prioritized replay on the learner's TD errors is fine)")


@dataclass
class PrefPPOConfig(PPOConfig, PreferenceFields):
    """PPO trained on a reward learned from preferences instead of the env's reward."""

    def __post_init__(self) -> None:
        PPOConfig.__post_init__(self)
        self.check_preference()
        require(not self.normalize_reward, "pref_ppo normalises its learned reward itself; set normalize_reward=false")
        require(not self.recurrent, "pref_ppo trains feed-forward policies; set recurrent=false")


def preference_settings(cfg: Any) -> PreferenceFields:
    """``cfg`` as its preference settings (a typed view for the pieces that need only those)."""
    assert isinstance(cfg, PreferenceFields)
    return cfg
