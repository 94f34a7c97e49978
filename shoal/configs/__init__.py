"""Per-env default hyperparameters, one YAML file per algorithm (rl-zoo style)."""
