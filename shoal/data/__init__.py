"""Replay data: storages, selectors, rate limiter, tables, adders and table checkpoints.

The in-process equivalent of Reverb: a :class:`ReplayTable` is a storage (where items
live), a selector (which items are sampled), a FIFO remover (which are evicted when
full) and a :class:`RateLimiter` (how many samples per insert). Adders turn an actor's
batched steps into items.
"""

from shoal.data.adders import BaseAdder, EpisodeAdder, NStepTransitionAdder, SequenceAdder, TransitionAdder, concat_items, split_priorities
from shoal.data.checkpoint import load_table, save_table
from shoal.data.frame_storage import FrameStackStorage
from shoal.data.heap_selectors import MaxHeap, MinHeap
from shoal.data.keys import KeyIndex
from shoal.data.rate_limiter import RateLimited, RateLimiter
from shoal.data.selectors import Fifo, Lifo, Prioritized, Selector, Uniform
from shoal.data.storage import ArrayStorage, Storage
from shoal.data.sum_tree import SumTree
from shoal.data.table import TABLE_TIMEOUT, ReplayTable
from shoal.data.weights import importance_weights

__all__ = [
    "ArrayStorage", "BaseAdder", "EpisodeAdder", "Fifo", "FrameStackStorage", "KeyIndex", "Lifo",
    "MaxHeap", "MinHeap", "NStepTransitionAdder", "Prioritized", "RateLimited", "RateLimiter",
    "ReplayTable", "Selector", "SequenceAdder", "Storage", "SumTree", "TABLE_TIMEOUT", "TransitionAdder",
    "Uniform", "concat_items", "importance_weights", "load_table", "save_table", "split_priorities",
]
