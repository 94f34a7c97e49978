"""EnvPool through shoal's contract: same-step autoreset and final observations (skipped without EnvPool)."""

import numpy as np
import pytest

envpool = pytest.importorskip("envpool")

from shoal.envs import make_vec_env  # noqa: E402


def test_envpool_same_step_autoreset():
    env = make_vec_env("CartPole-v1", 3, seed=0, mode="envpool")
    ended = 0
    for _ in range(60):
        s = env.step(np.ones(3, np.int64))
        if s.done.any():
            ended += int(s.done.sum())
            i = np.flatnonzero(s.done)[0]
            assert abs(s.final_obs[i, 2]) > 0.2 or abs(s.final_obs[i, 0]) > 2.4  # the failed pole state
            assert np.all(np.abs(s.next_obs[i]) <= 0.05)  # a fresh reset state
            assert s.reward[i] == 1.0  # a real step, not a dummy reset step
    assert ended >= 3


def test_ppo_on_envpool_beats_a_random_policy_by_far(tmp_path):
    import shoal
    from shoal.run.evaluate import evaluate

    r = shoal.train("ppo", "CartPole-v1", steps=8192, seed=0, run_dir=tmp_path / "r", quiet=True, tensorboard=False,
                    overrides={"vector": "envpool", "eval_episodes": 10})
    assert r.env_steps == 8192 and r.config.run.vector == "envpool"
    rng = np.random.default_rng(0)
    random_return = evaluate(lambda obs: rng.integers(0, 2, len(obs)), "CartPole-v1", 50, seed=123)["mean_return"]
    assert 10 < random_return < 40  # a uniform policy keeps the pole up for about 22 steps
    # Seeds 0-2 reach 435/202/216 at this budget: four times the random return leaves a wide margin.
    assert r.eval["mean_return"] >= 4 * random_return, (r.eval["mean_return"], random_return)
