"""Adders: turn an actor's batched steps into table items (transition, n-step, sequence, episode)."""

from shoal.data.adders.base import BaseAdder, concat_items, split_priorities
from shoal.data.adders.sequence import EpisodeAdder, SequenceAdder
from shoal.data.adders.transition import NStepTransitionAdder, TransitionAdder

__all__ = ["BaseAdder", "EpisodeAdder", "NStepTransitionAdder", "SequenceAdder", "TransitionAdder",
           "concat_items", "split_priorities"]
