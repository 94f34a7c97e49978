"""A DQN run resumes with its learner, target network, optimiser and replay table."""

import shutil

import shoal
from shoal.io.checkpoint import list_checkpoints, load_checkpoint

OVR = {"checkpoint_every": 2048, "eval_episodes": 2, "keep_checkpoints": 10, "learning_starts": 500,
       "buffer_size": 3000, "prioritized": True}


def test_dqn_resume_continues_learner_and_replay(tmp_path):
    full = shoal.train("dqn", "CartPole-v1", steps=4096, seed=3, run_dir=tmp_path / "full", quiet=True,
                       tensorboard=False, overrides=OVR)
    part = tmp_path / "part"
    shutil.copytree(full.run_dir, part)
    for j in list_checkpoints(part / "checkpoints"):
        if int(j.stem.split("-")[-1]) > 2048:
            j.unlink()
            j.with_suffix(".safetensors").unlink()
    mid, _ = load_checkpoint(list_checkpoints(part / "checkpoints")[-1])
    table = mid["program"]["learner_node"]["tables"]["replay"]
    assert table["index"]["size"] == 2048 - 4 * 2  # 4 env copies, each with 2 steps of a 3-step window pending
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
    # the replay kept its pre-crash items; only the adders' pending 3-step windows (2 steps x 4 copies)
    # were lost when the envs restarted, so the table evicted 8 items fewer
    sa = a["program"]["learner_node"]["tables"]["replay"]["num_evicted"]
    sb = b["program"]["learner_node"]["tables"]["replay"]["num_evicted"]
    assert sb > 0 and sa - sb == 8
