"""Running experiments: run directory, metrics, checkpoints, evaluation, plots."""
