"""The C51 projection of n-step targets: hand-computed cases and the per-atom loop of Bellemare et al.
2017, Algorithm 1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shoal.core.types import StepResult
from shoal.data import NStepTransitionAdder
from shoal.returns.categorical import categorical_mean, categorical_projection, categorical_support

SUPPORT = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])  # v_min 0, v_max 4, dz 1
UNIFORM = torch.full((1, 5), 0.2)


def _one_hot(i: int, n: int = 5) -> torch.Tensor:
    p = torch.zeros(1, n)
    p[0, i] = 1.0
    return p


def _project(probs: torch.Tensor, reward: float, discount: float, support: torch.Tensor = SUPPORT) -> torch.Tensor:
    return categorical_projection(probs, torch.tensor([reward]), torch.tensor([discount]), support)[0]


def test_support_spans_v_min_to_v_max_evenly() -> None:
    z = categorical_support(-10.0, 10.0, 51)
    assert z.shape == (51,) and z[0] == -10.0 and z[-1] == 10.0
    assert torch.allclose(z.diff(), torch.full((50,), 0.4))
    with pytest.raises(ValueError, match="v_max > v_min"):
        categorical_support(1.0, 1.0, 51)
    with pytest.raises(ValueError, match="at least 2 atoms"):
        categorical_support(0.0, 1.0, 1)


def test_a_target_between_two_atoms_splits_its_mass_by_distance() -> None:
    # 2 + 0.5 = 2.5: half to atom 2, half to atom 3; 2 + 0.25 = 2.25: 3/4 to atom 2, 1/4 to atom 3.
    assert torch.allclose(_project(_one_hot(2), 0.5, 1.0), torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0]))
    assert torch.allclose(_project(_one_hot(2), 0.25, 1.0), torch.tensor([0.0, 0.0, 0.75, 0.25, 0.0]))


def test_a_target_on_an_atom_keeps_all_its_mass_there() -> None:
    assert torch.allclose(_project(_one_hot(1), 2.0, 1.0), _one_hot(3)[0])


def test_a_discount_contracts_the_distribution() -> None:
    # Tz = 1 + 0.5 z = [1, 1.5, 2, 2.5, 3], each with mass 0.2:
    # atom 1: 0.2 + 0.1; atom 2: 0.1 + 0.2 + 0.1; atom 3: 0.1 + 0.2.
    assert torch.allclose(_project(UNIFORM, 1.0, 0.5), torch.tensor([0.0, 0.3, 0.4, 0.3, 0.0]))


def test_targets_beyond_the_support_are_clipped_onto_its_ends() -> None:
    assert torch.allclose(_project(_one_hot(2), 10.0, 1.0), _one_hot(4)[0])
    assert torch.allclose(_project(_one_hot(2), -10.0, 1.0), _one_hot(0)[0])
    # Tz = 2 + z = [2, 3, 4, 5, 6]: the last three land on v_max = 4.
    assert torch.allclose(_project(UNIFORM, 2.0, 1.0), torch.tensor([0.0, 0.0, 0.2, 0.2, 0.6]))
    # Tz = -1.5 + z = [-1.5, -0.5, 0.5, 1.5, 2.5]: two clipped to 0, the rest split.
    assert torch.allclose(_project(UNIFORM, -1.5, 1.0), torch.tensor([0.5, 0.2, 0.2, 0.1, 0.0]))


def test_a_terminal_transition_collapses_every_atom_onto_the_reward() -> None:
    # discount 0: Tz_j = R = 1.25 for every j, whatever the next distribution is.
    for probs in (UNIFORM, _one_hot(4), torch.tensor([[0.1, 0.2, 0.3, 0.25, 0.15]])):
        assert torch.allclose(_project(probs, 1.25, 0.0), torch.tensor([0.0, 0.75, 0.25, 0.0, 0.0]))
    assert torch.allclose(_project(UNIFORM, 7.0, 0.0), _one_hot(4)[0])  # clipped as well


def _adder_items(rewards: list[float], terminated_at: int | None, truncated_at: int | None, n: int, gamma: float
                 ) -> dict[str, np.ndarray]:
    """Items of one env copy whose k-th step (from 0) gives ``rewards[k]``; the episode may end at a step."""
    adder = NStepTransitionAdder(n, gamma)
    obs = np.zeros((1, 1), np.float32)
    adder.add_first(obs)
    for k, r in enumerate(rewards):
        term, trunc = np.array([k == terminated_at]), np.array([k == truncated_at])
        final = np.full((1, 1), k + 1, np.float32)  # the observation the step reached
        # At an episode end the env has already reset: next_obs is the new episode's first, a different one.
        nxt = np.full((1, 1), -100.0, np.float32) if (term[0] or trunc[0]) else final
        adder.add(np.zeros((1, 1), np.float32), StepResult(nxt, np.array([r], np.float32), term, trunc, final))
    items = adder.drain()
    assert items is not None
    return items


def test_n_step_items_project_the_discounted_reward_sum_plus_the_discounted_atoms() -> None:
    support = torch.linspace(-10.0, 10.0, 21)  # dz = 1
    probs = torch.zeros(1, 21)
    probs[0, 14] = 1.0  # all mass on z = 4
    gamma = 0.5
    items = _adder_items([1.0, 2.0, 4.0, 8.0], None, None, n=3, gamma=gamma)
    # The first window: r0 + g r1 + g^2 r2 = 1 + 1 + 1 = 3, discount g^3; Tz = 3 + 0.125 * 4 = 3.5.
    r, d = float(items["reward"][0]), float(items["discount"][0])
    assert r == pytest.approx(3.0) and d == pytest.approx(gamma ** 3)
    out = _project(probs, r, d, support)
    expected = torch.zeros(21)
    expected[13] = expected[14] = 0.5  # atoms 3 and 4
    assert torch.allclose(out, expected)


def test_n_step_windows_ending_in_termination_collapse_and_in_truncation_bootstrap() -> None:
    support = torch.linspace(-10.0, 10.0, 21)
    probs = torch.zeros(1, 21)
    probs[0, 14] = 1.0  # z = 4
    gamma = 0.5
    terminated = _adder_items([1.0, 2.0, 4.0], terminated_at=2, truncated_at=None, n=3, gamma=gamma)
    truncated = _adder_items([1.0, 2.0, 4.0], terminated_at=None, truncated_at=2, n=3, gamma=gamma)
    # Windows from steps 0, 1, 2: rewards 1 + 1 + 1 = 3, 2 + 2 = 4 and 4, over 3, 2 and 1 steps.
    for items in (terminated, truncated):
        assert np.allclose(items["reward"], [3.0, 4.0, 4.0])
    # Truncated windows bootstrap from the observation the last step reached (final_obs, 3), not the reset one.
    assert np.allclose(truncated["next_obs"][:, 0], 3.0)
    assert np.allclose(terminated["discount"], 0.0)
    assert np.allclose(truncated["discount"], [gamma ** 3, gamma ** 2, gamma])
    for i, (r_sum, bootstrap) in enumerate([(3.0, 0.5), (4.0, 1.0), (4.0, 2.0)]):
        term = _project(probs, float(terminated["reward"][i]), float(terminated["discount"][i]), support)
        trunc = _project(probs, float(truncated["reward"][i]), float(truncated["discount"][i]), support)
        assert categorical_mean(term, support).item() == pytest.approx(r_sum)  # atoms collapse onto R
        assert term.max().item() == pytest.approx(1.0)
        assert categorical_mean(trunc, support).item() == pytest.approx(r_sum + bootstrap)  # R + gamma^m * 4


def _algorithm_1(probs: np.ndarray, reward: np.ndarray, discount: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Bellemare et al. 2017, Algorithm 1, one sample and one atom at a time.

    When ``b_j`` is an integer (``l == u``) the paper's two updates both add 0; the whole mass
    then goes to atom ``l``, as every implementation of C51 does.
    """
    v_min, v_max, n = support[0], support[-1], len(support)
    dz = (v_max - v_min) / (n - 1)
    out = np.zeros_like(probs)
    for b in range(len(probs)):
        for j in range(n):
            tz = min(max(reward[b] + discount[b] * support[j], v_min), v_max)
            bj = (tz - v_min) / dz
            lo, up = math.floor(bj), math.ceil(bj)
            if lo == up:
                out[b, lo] += probs[b, j]
            else:
                out[b, lo] += probs[b, j] * (up - bj)
                out[b, up] += probs[b, j] * (bj - lo)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_matches_the_per_atom_loop_of_c51_on_random_inputs(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    b, n = 64, 11
    support = categorical_support(-3.0, 5.0, n, torch.float64)  # dz = 0.8
    probs = torch.softmax(torch.randn(b, n, generator=gen, dtype=torch.float64) * 2, -1)
    reward = torch.randn(b, generator=gen, dtype=torch.float64) * 4  # many targets beyond the support
    discount = torch.tensor([0.0, 0.9, 0.99 ** 3, 1.0], dtype=torch.float64).repeat(b // 4)
    reward[:4] = torch.tensor([0.2, -2.2, 1.0, -1.4], dtype=torch.float64)  # a few exactly on atoms
    out = categorical_projection(probs, reward, discount, support)
    ref = _algorithm_1(probs.numpy(), reward.numpy(), discount.numpy(), support.numpy())
    assert np.allclose(out.numpy(), ref, atol=1e-12)
    assert torch.allclose(out.sum(-1), torch.ones(b, dtype=torch.float64))
    # Inside the support the projection keeps the target's mean: R + discount * E[z].
    tz = reward.unsqueeze(-1) + discount.unsqueeze(-1) * support
    inside = ((tz >= -3.0) & (tz <= 5.0)).all(-1)
    assert inside.sum() > 3
    assert torch.allclose(categorical_mean(out, support)[inside],
                          (reward + discount * categorical_mean(probs, support))[inside])


def test_projection_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="probs must be"):
        categorical_projection(torch.ones(2, 4) / 4, torch.zeros(2), torch.zeros(2), SUPPORT)
    with pytest.raises(ValueError, match="reward"):
        categorical_projection(UNIFORM, torch.zeros(2), torch.zeros(1), SUPPORT)
