"""The one exception type users see: a sentence saying what was wrong and what to do."""

from __future__ import annotations


class ShoalError(Exception):
    """A user-facing error. The CLI prints its message on one line and exits non-zero."""


class ConfigError(ShoalError):
    """A configuration value or file is invalid."""


class EnvError(ShoalError):
    """An environment is unknown or misbehaves (bad shape, NaN, ...)."""


class CheckpointError(ShoalError):
    """A checkpoint is missing, corrupt or incompatible."""


class CheckpointFormatError(CheckpointError):
    """A checkpoint written by a newer shoal: intact, but not readable by this one."""


class ShoalWarning(UserWarning):
    """A warning of shoal's own (a checkpoint passed over, replay not restored); the CLI prints it as one line."""
