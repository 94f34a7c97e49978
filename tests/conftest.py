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


def _tree_differences(a, b, path: str = "") -> list[str]:
    """Paths where two nested states differ: every tensor and array exactly (dtype, shape, values)."""
    import numpy as np

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
        return [] if same else [path]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        same = (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
        return [] if same else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path} (keys {sorted(map(str, set(a) ^ set(b)))})"]
        return [d for k in a for d in _tree_differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path} (length {len(a)} != {len(b)})"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _tree_differences(x, y, f"{path}/{i}")]
    if a != b and not (a != a and b != b):  # NaN equals NaN here
        return [f"{path} ({a!r} != {b!r})"]
    return []


@pytest.fixture
def tree_differences():
    """``f(a, b) -> list of paths`` where two nested states (dicts, lists, tensors, arrays, scalars) differ."""
    return _tree_differences


@pytest.fixture
def crash_after_checkpoint(monkeypatch):
    """``crash_after_checkpoint(step)``: the next run raises right after writing its checkpoint at ``step``.

    A faithful crash: the run directory holds exactly what the runner had written by then
    (older checkpoints have already dropped their replay), unlike deleting later checkpoints.
    """
    import shoal.run.runner as runner

    real = runner.save_checkpoint

    def arm(step: int) -> None:
        def save(path, tree, meta=None):
            out = real(path, tree, meta)
            if (meta or {}).get("env_steps") == step:
                monkeypatch.setattr(runner, "save_checkpoint", real)
                raise RuntimeError(f"simulated crash after the checkpoint at {step} env steps")
            return out

        monkeypatch.setattr(runner, "save_checkpoint", save)

    return arm


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for the whole test session (every ``ray``-marked test shares it).

    RayBackend reuses an initialised Ray and leaves it running on shutdown; it is stopped
    once, when the session ends.
    """
    import ray

    from shoal.backends.ray import restore_auth_env, start_private_ray

    before = None
    if not ray.is_initialized():
        # Logical CPUs: enough for every node of the largest topology a test starts (16 actors + services).
        # Started as shoal starts its own (token authentication on, a token of this process), so tests see that instance.
        before = start_private_ray(num_cpus=24)
    yield
    ray.shutdown()
    if before is not None:
        restore_auth_env(before)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("ray") is not None:
            if "ray_instance" not in item.fixturenames:
                item.fixturenames.append("ray_instance")
