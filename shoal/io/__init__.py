"""Serialisation below the run layer: atomic files and pickle-free checkpoints."""
