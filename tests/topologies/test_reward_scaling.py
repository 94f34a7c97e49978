"""``normalize_reward`` reaches the learner on every topology whose actors step envs for a policy-gradient learner:
the rewards it learns from are scaled by the running std of the discounted return (CartPole's are all 1 unscaled),
while the episode returns reported stay the env's own."""

from __future__ import annotations

import numpy as np
import pytest

import shoal
from shoal.agents.pg.learner import ActorCriticLearner
from shoal.core.types import Rollout


@pytest.mark.timeout(120)
@pytest.mark.parametrize("algo,topology", [("ppo", "local"), ("impala", "impala"), ("impala", "seed"), ("ga3c", "ga3c"),
                                           ("a3c", "a3c")])
@pytest.mark.parametrize("normalize", [True, False])
def test_the_learner_sees_scaled_rewards_only_with_normalize_reward(tmp_path, monkeypatch, algo, topology, normalize):
    seen: list[np.ndarray] = []
    for name in ("step", "compute_gradients"):
        real = getattr(ActorCriticLearner, name)

        def recording(self, data=None, _real=real):
            rollouts = data if isinstance(data, list) else [data]
            seen.extend(np.asarray(r.rewards, np.float64).ravel() for r in rollouts if isinstance(r, Rollout))
            return _real(self, data)

        monkeypatch.setattr(ActorCriticLearner, name, recording)
    r = shoal.train(algo, "CartPole-v1", steps=3000, seed=0, run_dir=tmp_path / "run", topology=topology, num_actors=2,
                    quiet=True, tensorboard=False,
                    overrides={"normalize_reward": normalize, "num_envs": 2, "rollout_length": 16, "eval_episodes": 1})
    rewards = np.concatenate(seen)
    assert len(rewards) >= 500, len(rewards)
    if normalize:
        assert not np.allclose(rewards, 1.0) and rewards.std() > 0.01, rewards[:10]
    else:
        assert np.allclose(rewards, 1.0)
    reported = [h["episode_return_mean"] for h in r.history if np.isfinite(h.get("episode_return_mean", np.nan))]
    assert reported and min(reported) >= 8  # the env's own returns (CartPole's episodes last 8 steps or more)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("topology", ["seed", "ga3c"])
def test_env_workers_reward_statistics_are_checkpointed_in_cooperative_mode(tmp_path, topology):
    """SEED's env workers and GA3C's agents scale rewards with statistics of their own: a checkpoint keeps them and a
    resume gives them back, as the local topology's actors do."""
    from shoal.io.checkpoint import list_checkpoints, load_checkpoint

    algo = "ga3c" if topology == "ga3c" else "impala"
    run = tmp_path / "run"
    overrides = {"normalize_reward": True, "num_envs": 2, "rollout_length": 16, "eval_episodes": 1}
    shoal.train(algo, "CartPole-v1", steps=2000, seed=0, run_dir=run, topology=topology, num_actors=2, quiet=True,
                tensorboard=False, overrides=overrides)
    tree, _ = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])
    saved = tree["program"]["actors"]
    assert len(saved) == 2 and all(s["reward_norm"]["rms"]["count"] > 100 for s in saved), saved
    r = shoal.train(resume=run, steps=2500, quiet=True, tensorboard=False)
    tree, _ = load_checkpoint(list_checkpoints(r.run_dir / "checkpoints")[-1])
    counts = [s["reward_norm"]["rms"]["count"] for s in tree["program"]["actors"]]
    assert all(c > s["reward_norm"]["rms"]["count"] for c, s in zip(counts, saved)), counts  # went on from them
