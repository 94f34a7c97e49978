"""Thread counts per process: small networks on few cores run fastest single-threaded."""

from __future__ import annotations

import torch


def set_threads(n: int) -> None:
    """Use ``n`` threads for torch's intra-op pool and for numpy's BLAS.

    Several processes each using every core oversubscribe a small machine; a 64x64
    MLP gains nothing from threads anyway.
    """
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")
    except ImportError:  # threadpoolctl is a dependency; tolerate its absence
        pass
