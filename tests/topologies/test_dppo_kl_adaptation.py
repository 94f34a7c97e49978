"""DPPO's adaptive KL penalty adapts once per policy iteration, however many of the N workers report."""

import pytest

from shoal.backends.inprocess import InProcessBackend
from shoal.settings import RunConfig
from shoal.topologies.dppo import ChiefNode, DPPOProgram, DPPOSettings


def test_one_iteration_of_n_reports_adapts_the_penalty_once_from_the_first_m(small_ctx):
    """N = 3, M = 2, 4 rounds a rollout, target 0.01: tiny KLs halve beta once per iteration (not once per M reports)."""
    ctx = small_ctx("dppo", loss="kl_penalty", kl_target=0.01, kl_beta=1.0)
    chief = ChiefNode(ctx, 3, DPPOSettings(min_gradients=2, rounds_per_rollout=4))
    assert chief.report_kl(0.001, 4) and chief.learner.beta == 1.0  # one of M = 2
    assert chief.report_kl(0.003, 5) and chief.learner.beta == 0.5  # mean 0.002 < 0.00667: halved
    assert chief.metrics()["kl"] == pytest.approx(0.002)
    # the third worker of the same iteration (measured fewer than 4 versions after 4): late, not a second halving
    assert not chief.report_kl(0.0, 7)
    assert chief.learner.beta == 0.5 and chief.metrics()["late_kl_reports"] == 1
    # the next iteration's reports (4 versions on) adapt again, from their own mean only
    assert chief.report_kl(0.05, 8) and chief.learner.beta == 0.5
    assert chief.report_kl(0.07, 9) and chief.learner.beta == 1.0  # mean 0.06 > 0.015: doubled
    assert chief.metrics()["kl"] == pytest.approx(0.06)


def test_cooperative_dppo_adapts_the_penalty_once_per_iteration_with_two_workers(small_ctx):
    """Two workers, M = 1 (the default N - 1): each iteration's first report adapts, the second is late."""
    ctx = small_ctx("dppo", loss="kl_penalty", kl_target=0.01, kl_beta=1.0)
    prog = DPPOProgram(ctx, RunConfig(steps=10_000, num_actors=2), InProcessBackend(), DPPOSettings(rounds_per_rollout=2))
    try:
        chief = prog.backend.nodes[0]
        betas = [chief.learner.beta]
        for _ in range(3):
            rep = prog.run_iteration()
            betas.append(chief.learner.beta)
        # one adaptation per iteration moves beta by a factor of 2 at most, never 4
        assert all(b / a in (0.5, 1.0, 2.0) for a, b in zip(betas, betas[1:])), betas
        assert rep.metrics["late_kl_reports"] == 3  # one straggler per iteration
    finally:
        prog.close()
