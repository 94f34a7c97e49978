"""Core interfaces and batch types shared by every algorithm and topology."""

from shoal.core.interfaces import Actor, Adder, Builder, Learner, Table, VariableSource
from shoal.core.types import EnvSpec, StepResult, Rollout, ActorReport

__all__ = [
    "Actor", "Adder", "Builder", "Learner", "Table", "VariableSource",
    "EnvSpec", "StepResult", "Rollout", "ActorReport",
]
