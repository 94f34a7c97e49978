"""The versioned variable source."""

import threading

import numpy as np
import pytest
import torch

from shoal.errors import ShoalError
from shoal.services.variables import VariableServer


def test_versions_grow_and_readers_get_only_newer_snapshots():
    server = VariableServer()
    assert server.get() is None and server.version == -1
    w = {"w": torch.zeros(3)}
    s0 = server.publish(w)
    assert s0.version == 0 and server.get(-1) is s0 and server.get(0) is None
    w["w"] += 1.0  # the live weights move on; the snapshot must not
    s1 = server.publish(w)
    assert s1.version == 1
    np.testing.assert_array_equal(s0.tensors()["w"].numpy(), np.zeros(3))
    np.testing.assert_array_equal(server.get(0).tensors()["w"].numpy(), np.ones(3))
    with pytest.raises(ShoalError, match="not newer"):
        server.publish(w, version=1)


def test_a_reader_waits_for_the_next_version():
    server = VariableServer()
    server.publish({"w": torch.zeros(2)})
    got = []
    t = threading.Thread(target=lambda: got.append(server.get(0, timeout=10.0)))
    t.start()
    server.publish({"w": torch.ones(2)})
    t.join(timeout=10.0)
    assert not t.is_alive() and got[0].version == 1
    assert server.get(1, timeout=0.05) is None
