"""Core interfaces and batch types shared by every algorithm and topology."""

from shoal.core.interfaces import Actor, Adder, Builder, Learner, Table, VariableSource
from shoal.core.types import ActorReport, EnvSpec, Rollout, StepResult

__all__ = [
    "Actor", "Adder", "Builder", "Learner", "Table", "VariableSource",
    "EnvSpec", "StepResult", "Rollout", "ActorReport",
]
