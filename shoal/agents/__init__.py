"""Algorithms: one folder per family, each a config dataclass plus a Builder."""
