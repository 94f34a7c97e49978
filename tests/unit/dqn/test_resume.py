"""A DQN run resumes with its learner, target network, optimiser and replay table."""

import pytest

import shoal
from shoal.io.checkpoint import list_checkpoints, load_checkpoint

OVR = {"checkpoint_every": 2048, "eval_episodes": 2, "keep_checkpoints": 10, "learning_starts": 500,
       "buffer_size": 3000, "prioritized": True}


def test_dqn_resume_continues_learner_and_replay(tmp_path, crash_after_checkpoint):
    full = shoal.train("dqn", "CartPole-v1", steps=4096, seed=3, run_dir=tmp_path / "full", quiet=True,
                       tensorboard=False, overrides=OVR)
    part = tmp_path / "part"
    crash_after_checkpoint(2048)  # the same run, dying right after its 2048-step checkpoint
    with pytest.raises(RuntimeError, match="simulated crash"):
        shoal.train("dqn", "CartPole-v1", steps=4096, seed=3, run_dir=part, quiet=True, tensorboard=False,
                    overrides=OVR)
    mid, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    table = mid["program"]["learner_node"]["tables"]["replay"]
    size_ck = table["index"]["size"]
    # 4 env copies, each with at most 2 steps of a 3-step window still pending in its adder (fewer
    # where an episode ended in the last 2 steps), nothing evicted yet (capacity 3000).
    assert 2048 - 4 * 2 <= size_ck <= 2048 and table["num_evicted"] == 0
    assert mid["program"]["learner"]["steps"] == mid["program"]["learner_node"]["learner_steps"] > 0

    resumed = shoal.train(resume=part, quiet=True, tensorboard=False)
    assert resumed.env_steps == full.env_steps
    a, _ = load_checkpoint(list_checkpoints(full.run_dir / "checkpoints")[-1])
    b, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    la, lb = a["program"]["learner"], b["program"]["learner"]
    assert la["steps"] == lb["steps"]  # the replay ratio carried on from the checkpoint
    steps_a = [float(v["step"]) for v in la["optimizer"]["state"].values()]
    steps_b = [float(v["step"]) for v in lb["optimizer"]["state"].values()]
    assert steps_a == steps_b
    assert set(lb) >= {"networks", "target_networks", "optimizer", "steps"}
    # The replay kept its pre-crash items: everything the resumed table ever held (size + evicted) is
    # the checkpoint's items plus the 2048 new steps, less at most 8 steps still pending in the adders.
    # Had the table restarted empty, about 2040 items would be missing.
    ta, tb = (t["program"]["learner_node"]["tables"]["replay"] for t in (a, b))
    inserted_a, inserted_b = (t["index"]["size"] + t["num_evicted"] for t in (ta, tb))
    assert tb["num_evicted"] > 0 and tb["index"]["size"] == ta["index"]["size"] == 3000
    assert 0 <= size_ck + 2048 - inserted_b <= 4 * 2 and 0 <= 4096 - inserted_a <= 4 * 2
