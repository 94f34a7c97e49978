"""What every builder of a replay-based agent shares: its batch size, replay checkpointing and update schedule."""

from __future__ import annotations

from typing import Any

from shoal.core.interfaces import Builder


def train_freq_steps_due(config: Any, env_steps: int, learner_steps: int) -> int:
    """``config.gradient_steps`` per ``config.train_freq`` env steps from ``config.learning_starts`` on, minus
    the ``learner_steps`` done: DQN's update schedule, for any config with those three fields."""
    if env_steps < config.learning_starts:
        return 0
    rounds = (env_steps - config.learning_starts) // config.train_freq + 1
    return max(0, rounds * config.gradient_steps - learner_steps)


class ReplayBuilder(Builder):
    """A builder whose config has ``batch_size`` and ``checkpoint_replay`` (DQN, R2D2, DDPG/TD3/SAC/D4PG)."""

    config: Any

    @property
    def replay_batch_size(self) -> int:
        """``batch_size``: items per learner batch."""
        return self.config.batch_size

    @property
    def checkpoint_replay(self) -> bool:
        """``checkpoint_replay``: whether checkpoints hold the replay table."""
        return self.config.checkpoint_replay


class TrainFreqBuilder(ReplayBuilder):
    """A replay builder on DQN's schedule: ``gradient_steps`` updates every ``train_freq`` env steps."""

    @property
    def steps_per_iteration(self) -> int:
        """Vector steps per actor per iteration: ``train_freq`` env steps (at least one vector step)."""
        return max(1, self.config.train_freq // self.num_envs)

    def learner_steps_due(self, env_steps: int, learner_steps: int) -> int:
        """``gradient_steps`` per ``train_freq`` env steps from ``learning_starts`` on, minus those done."""
        return train_freq_steps_due(self.config, env_steps, learner_steps)
