"""The LSTM torso: state reset at episode starts, carried across unrolls, equal to a one-step loop."""

from __future__ import annotations

import torch

from shoal.nets.recurrent import LSTMTorso


def _loop(torso: LSTMTorso, x: torch.Tensor, state, starts: torch.Tensor):
    """The reference: one timestep at a time, zeroing each starting column's state by hand."""
    h, c = state
    outs = []
    for t in range(x.shape[0]):
        keep = (~starts[t]).float().view(1, -1, 1)
        h, c = h * keep, c * keep
        z = torso.encoder(x[t:t + 1].float())
        out, (h, c) = torso.lstm(z, (h, c))
        outs.append(out[0])
    return torch.stack(outs), (h, c)


def test_forward_equals_the_one_step_loop_with_starts_inside_the_sequence():
    torch.manual_seed(0)
    torso = LSTMTorso(3, hidden=8, encoder=(16,), num_layers=2)
    T, B = 12, 5
    x = torch.randn(T, B, 3)
    starts = torch.rand(T, B) < 0.2
    state = (torch.randn(2, B, 8), torch.randn(2, B, 8))
    out, (h, c) = torso(x, state, starts)
    ref, (rh, rc) = _loop(torso, x, state, starts)
    assert out.shape == (T, B, 8)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h, rh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, rc, rtol=1e-5, atol=1e-6)


def test_a_start_forgets_everything_before_it():
    torch.manual_seed(1)
    torso = LSTMTorso(2, hidden=4)
    T, B = 6, 1
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[3] = True
    a, b = torch.randn(T, B, 2), torch.randn(T, B, 2)
    b[3:] = a[3:]  # different pasts, the same episode from t = 3
    s0 = torso.initial_state(B)
    out_a, _ = torso(a, (torch.randn(1, B, 4), torch.randn(1, B, 4)), starts)
    out_b, _ = torso(b, s0, starts)
    assert not torch.allclose(out_a[:3], out_b[:3])
    torch.testing.assert_close(out_a[3:], out_b[3:])
    # and what follows a start equals a fresh episode run from zero state
    fresh, _ = torso(a[3:], torso.initial_state(B), torch.zeros(3, B, dtype=torch.bool))
    torch.testing.assert_close(out_a[3:], fresh)


def test_state_carries_across_unroll_boundaries():
    torch.manual_seed(2)
    torso = LSTMTorso(3, hidden=6)
    T, B = 10, 3
    x = torch.randn(T, B, 3)
    starts = torch.rand(T, B) < 0.15
    whole, s_whole = torso(x, torso.initial_state(B), starts)
    first, s = torso(x[:4], torso.initial_state(B), starts[:4])
    second, s2 = torso(x[4:], s, starts[4:])
    torch.testing.assert_close(torch.cat([first, second]), whole)
    torch.testing.assert_close(s2[0], s_whole[0])
    # step() is forward() over one timestep
    st = torso.initial_state(B)
    outs = []
    for t in range(T):
        o, st = torso.step(x[t], st, starts[t])
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs), whole, rtol=1e-5, atol=1e-6)


def test_gradients_flow_through_the_carried_state_but_not_across_a_start():
    torch.manual_seed(3)
    torso = LSTMTorso(2, hidden=4)
    T, B = 5, 2
    x = torch.randn(T, B, 2, requires_grad=True)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[2, 0] = True
    out, _ = torso(x, torso.initial_state(B), starts)
    out[-1].sum().backward()
    assert x.grad is not None
    assert torch.all(x.grad[:2, 0] == 0)  # column 0 restarted at t = 2: its past gets no gradient
    assert torch.any(x.grad[:2, 1] != 0)  # column 1 never restarted
