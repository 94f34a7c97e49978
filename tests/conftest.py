"""Shared test settings: one torch thread (2-core CI machines), quiet runs."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture
def run_dir(tmp_path):
    """A fresh run directory path (not created)."""
    return tmp_path / "run"
