"""Envs that hang: a step that never returns is abandoned after ``env_step_timeout`` seconds and the env is
made anew inside its node (in-process: a watchdog thread; vector=async: its worker processes terminated; on
Ray: inside the actor's process); past ``max_restarts`` the run stops with one line naming the env and step."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import shoal
from shoal.errors import EnvError

TIMEOUT = 1.0


class HangingCartPole(gym.Wrapper):
    """CartPole whose ``at``-th step (counted per env copy) never returns, until ``release`` exists.

    With ``once`` only the first copy to get there hangs (a marker file holds the time it began, across
    processes); otherwise every copy hangs at its ``at``-th step. Every copy made appends its time and process id
    to ``made``.
    """

    def __init__(self, folder: str, at: int, once: bool) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.folder, self.at, self.once, self.steps = Path(folder), at, once, 0
        with open(self.folder / "made", "a") as f:
            f.write(f"{time.time()} {os.getpid()}\n")

    def step(self, action):
        self.steps += 1
        if self.steps == self.at and self._claim():
            while not (self.folder / "release").exists():  # "forever": until the test ends
                time.sleep(0.05)
        return self.env.step(action)

    def _claim(self) -> bool:
        if not self.once:
            with open(self.folder / "hangs", "a") as f:
                f.write(f"{time.time()}\n")
            return True
        try:
            fd = os.open(self.folder / "hung", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, f"{time.time()} {os.getpid()}".encode())
        os.close(fd)
        return True


def _hanging(folder: Path, at: int, once: bool = True):
    path = str(folder)

    def make():
        return HangingCartPole(path, at, once)

    make.__name__ = "HangingCartPole"
    return make


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "faults"
    d.mkdir()
    yield d
    (d / "release").touch()  # every hung step (threads, worker processes) returns and ends


def _recovery_s(folder: Path, same_process: bool) -> float:
    """Seconds from the start of the hang to the first env copy made after it (in the hung copy's process).

    ``same_process`` counts only copies made in the process whose copy hung: on Ray another actor's process may
    make its first envs after the hang began, which says nothing of the recovery."""
    hung_at, hung_pid = (folder / "hung").read_text().split()
    made = [line.split() for line in (folder / "made").read_text().splitlines()]
    return min(float(t) for t, pid in made
               if float(t) > float(hung_at) and (pid == hung_pid or not same_process)) - float(hung_at)


SMALL_PPO = {"eval_episodes": 0, "num_envs": 2, "rollout_length": 32, "env_step_timeout": TIMEOUT}
SMALL_IMPALA = {"eval_episodes": 0, "num_envs": 2, "rollout_length": 16, "env_step_timeout": TIMEOUT}


def _check_recovered(r, folder: Path, steps: int, same_process: bool = False) -> float:
    assert (folder / "hung").exists()
    assert r.env_steps >= steps
    assert r.history[-1]["env_restarts"] == 1.0
    recovery = _recovery_s(folder, same_process)
    print(f"recovered {recovery:.2f} s after the hang began (env_step_timeout={TIMEOUT})")
    # The timeout (counted from the call, a moment before the hung step wrote its time), plus making a new env.
    assert TIMEOUT - 0.05 <= recovery < TIMEOUT + 1.5
    return recovery


@pytest.mark.timeout(60)
def test_a_hung_env_on_the_local_topology_is_made_anew_after_the_timeout(tmp_path, folder):
    r = shoal.train("ppo", _hanging(folder, at=100), steps=1024, seed=0, run_dir=tmp_path / "run", quiet=True,
                    tensorboard=False, overrides=SMALL_PPO)
    _check_recovered(r, folder, 1024)


@pytest.mark.timeout(60)
def test_a_hung_env_in_an_actor_node_is_made_anew_after_the_timeout(tmp_path, folder):
    r = shoal.train("impala", _hanging(folder, at=300), steps=3000, seed=0, num_actors=2, backend="threaded",
                    run_dir=tmp_path / "run", quiet=True, tensorboard=False, overrides=SMALL_IMPALA)
    _check_recovered(r, folder, 3000)
    assert r.history[-1]["actor_restarts"] == 0.0  # the env was made anew inside its node


@pytest.mark.timeout(60)
def test_a_hung_async_vector_env_has_its_workers_terminated_and_is_made_anew(tmp_path, folder):
    r = shoal.train("ppo", _hanging(folder, at=100), steps=1024, seed=0, run_dir=tmp_path / "run", quiet=True,
                    tensorboard=False, overrides={**SMALL_PPO, "vector": "async"})
    _check_recovered(r, folder, 1024)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_a_hung_env_in_a_ray_actor_is_made_anew_inside_its_process(tmp_path, folder):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the env travels to the workers by value
    try:
        r = shoal.train("impala", _hanging(folder, at=300), steps=3000, seed=0, num_actors=2, backend="ray",
                        run_dir=tmp_path / "run", quiet=True, tensorboard=False, overrides=SMALL_IMPALA)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    _check_recovered(r, folder, 3000, same_process=True)
    assert r.history[-1]["actor_restarts"] == 0.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("vector", ["sync", "async"])
def test_an_env_hanging_more_than_max_restarts_stops_the_run_with_one_line(tmp_path, folder, vector):
    t0 = time.monotonic()
    with pytest.raises(EnvError, match=r"^actor 0: env HangingCartPole hung 2 times \(last at step \d+: EnvHung: step "
                                       r"did not return within 1 s \(env_step_timeout\)\); fix the env, or allow more "
                                       r"with max_restarts \(now 1\)$"):
        shoal.train("ppo", _hanging(folder, at=50, once=False), steps=10_000, seed=0, run_dir=tmp_path / "run",
                    quiet=True, tensorboard=False, overrides={**SMALL_PPO, "vector": vector, "max_restarts": 1})
    # two hangs: in sync mode the first copy's blocks the vector step; in worker processes both copies hang
    assert len((folder / "hangs").read_text().split()) == 2 * (2 if vector == "async" else 1)
    assert time.monotonic() - t0 < 30


class HangingResetCartPole(HangingCartPole):
    """CartPole whose ``at``-th reset (counted per env copy; the first is the one made with it) never returns, until
    ``release`` exists; ``once`` as :class:`HangingCartPole`'s."""

    def __init__(self, folder: str, at: int, once: bool) -> None:
        super().__init__(folder, at, once)
        self.resets = 0

    def step(self, action):
        return self.env.step(action)

    def reset(self, **kwargs):
        self.resets += 1
        if self.resets == self.at and self._claim():
            while not (self.folder / "release").exists():
                time.sleep(0.05)
        return self.env.reset(**kwargs)


def _hanging_reset_env(folder: Path, at: int, once: bool, vector: str, max_restarts: int = 3):
    from shoal.agents.pg.config import PPOConfig
    from shoal.config import to_dict
    from shoal.envs import env_spec
    from shoal.topologies.nodes import NodeContext, RestartingEnv

    path = str(folder)

    def make():
        return HangingResetCartPole(path, at, once)

    make.__name__ = "HangingResetCartPole"
    ctx = NodeContext("ppo", to_dict(PPOConfig(num_envs=2)), make, env_spec("CartPole-v1"), 100, 0, vector=vector,
                      env_step_timeout=TIMEOUT, max_restarts=max_restarts)
    return RestartingEnv(ctx, 2, 0, "actor 0")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("vector", ["sync", "async"])
def test_a_hung_reset_is_abandoned_after_the_timeout_and_the_env_made_anew_and_counted(folder, vector):
    env = _hanging_reset_env(folder, at=2, once=True, vector=vector)  # the first reset is the one made with it
    try:
        t0 = time.monotonic()
        obs = env.reset(seed=5)  # hangs in the first copy: a new env is made, and reset with a seed of its own
        elapsed = time.monotonic() - t0
        assert (folder / "hung").exists()
        assert env.take_restarts() == 1 and env.hangs == 1
        assert obs.shape == (2, 4) and (obs == env.obs).all()
        assert TIMEOUT - 0.05 <= elapsed < TIMEOUT + 3.0
        env.step(np.zeros(2, np.int64))  # the new env steps
    finally:
        (folder / "release").touch()  # should the reset still hang (no deadline), close must not wait on it forever
        env.close()


@pytest.mark.timeout(30)
def test_an_env_whose_resets_hang_more_than_max_restarts_stops_with_one_line(folder):
    t0 = time.monotonic()
    with pytest.raises(EnvError, match=r"^actor 0: env HangingResetCartPole hung 2 times \(last at step 0: EnvHung: "
                                       r"reset did not return within 1 s \(env_step_timeout\)\); fix the env, or "
                                       r"allow more with max_restarts \(now 1\)$"):
        _hanging_reset_env(folder, at=1, once=False, vector="sync", max_restarts=1)  # every first reset hangs
    assert len((folder / "hangs").read_text().split()) == 2
    assert time.monotonic() - t0 < 10


class RaisingCartPole(gym.Wrapper):
    """CartPole whose ``at``-th step, over every copy ever made in this process, raises once."""

    def __init__(self, counter: list[int], at: int) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.counter, self.at = counter, at

    def step(self, action):
        self.counter[0] += 1
        if self.counter[0] == self.at:
            raise RuntimeError(f"simulated simulator crash at step {self.at}")
        return self.env.step(action)


@pytest.mark.timeout(60)
def test_an_env_that_raises_on_the_local_topology_is_made_anew_and_counted(tmp_path):
    counter = [0]
    r = shoal.train("ppo", lambda: RaisingCartPole(counter, 300), steps=1024, seed=0, run_dir=tmp_path / "run",
                    quiet=True, tensorboard=False, overrides={"eval_episodes": 0, "num_envs": 2, "rollout_length": 32})
    assert counter[0] > 300 and r.env_steps >= 1024
    assert r.history[-1]["env_restarts"] == 1.0


def test_without_a_timeout_no_step_runs_in_another_thread():
    """The default (env_step_timeout=0) steps in the caller's thread: no cost for runs that do not ask."""
    import threading

    from shoal.agents.pg.config import PPOConfig
    from shoal.config import to_dict
    from shoal.envs import env_spec
    from shoal.topologies.nodes import NodeContext, RestartingEnv

    seen: list[str] = []

    class Where(gym.Wrapper):
        def step(self, action):
            seen.append(threading.current_thread().name)
            return self.env.step(action)

    def make():
        return Where(gym.make("CartPole-v1"))

    for timeout, expect in ((0.0, threading.current_thread().name), (5.0, "actor 0 env step")):
        ctx = NodeContext("ppo", to_dict(PPOConfig(num_envs=1)), make, env_spec("CartPole-v1"), 100, 0,
                          vector="sync", env_step_timeout=timeout)
        env = RestartingEnv(ctx, 1, 0, "actor 0")
        seen.clear()
        env.step(env.obs[:, 0].astype("int64") * 0)
        env.close()
        assert seen == [expect]


@pytest.mark.timeout(30)
def test_an_abandoned_step_that_returns_late_closes_its_env_and_ends_its_thread():
    """A hung in-process step is abandoned; if it returns after all, its thread closes that env and ends (no leak)."""
    import threading

    from shoal.envs.watchdog import EnvHung, StepWatchdog

    release, closed = threading.Event(), threading.Event()
    dog = StepWatchdog("late env step")
    with pytest.raises(EnvHung):
        dog.call(0.2, release.wait, 10.0)
    dog.close(then=closed.set)  # what RestartingEnv does with a hung in-process env
    release.set()  # the step returns late
    dog._thread.join(timeout=5)
    assert closed.is_set() and not dog._thread.is_alive()


def test_envs_made_anew_after_a_process_restart_take_seeds_of_the_new_process(monkeypatch):
    """A node process restarted by its backend counts env restarts from 0 again: its new envs' seeds must not repeat
    those the first process gave its own (the same data stream twice)."""
    from shoal.agents.pg.config import PPOConfig
    from shoal.config import to_dict
    from shoal.core.seeding import derive_seed
    from shoal.envs import env_spec
    from shoal.topologies.nodes import ActorNode, NodeContext, RestartingEnv

    ctx = NodeContext("ppo", to_dict(PPOConfig(num_envs=1)), "CartPole-v1", env_spec("CartPole-v1"), 100, 0)
    node = ActorNode(ctx, 0, 1, env_seed=11, actor_seed=2)
    try:
        seeds: list[int] = []
        make = RestartingEnv._make
        monkeypatch.setattr(RestartingEnv, "_make", lambda self, seed: seeds.append(seed) or make(self, seed))
        node.env.recreate(RuntimeError("first process"))
        node.on_restart()  # as in a restarted process: a fresh restart count
        node.env.restarts = 0
        node.env.recreate(RuntimeError("second process"))
    finally:
        node.close()
    assert seeds[0] == derive_seed(11, "restart", 1) and seeds[1] != seeds[0]
    assert seeds[1] == derive_seed(derive_seed(11, "process", os.getpid()), "restart", 1)


@pytest.mark.parametrize("algo", ["dqn", "ppo", "ddpg"])
def test_a_restarted_actor_node_explores_with_draws_of_its_own_process(algo):
    """Ray rebuilds a restarted node from its first arguments: its exploration draws (numpy's for DQN, torch's
    for PPO) must not repeat the first process's sequence."""
    import numpy as np
    import torch

    from shoal.agents import registry
    from shoal.config import to_dict
    from shoal.envs import env_spec
    from shoal.topologies.nodes import ActorNode, NodeContext

    env = "Pendulum-v1" if algo == "ddpg" else "CartPole-v1"
    cfg = registry.get(algo).config_cls()(num_envs=1)
    ctx = NodeContext(algo, to_dict(cfg), env, env_spec(env), 100, 0)
    first, again = ActorNode(ctx, 0, 1, env_seed=11, actor_seed=2), ActorNode(ctx, 0, 1, env_seed=11, actor_seed=2)
    try:
        again.on_restart()

        def draws(obj, depth=2):
            """Four draws of every generator the actor holds (a level down too: a policy's or engine's)."""
            out = []
            for value in vars(obj).values():
                if isinstance(value, np.random.Generator):
                    out.append(value.random(4).tolist())
                elif isinstance(value, torch.Generator):
                    out.append(torch.rand(4, generator=value).tolist())
                elif depth > 1 and hasattr(value, "__dict__") and not isinstance(value, (torch.nn.Module, type)):
                    out += draws(value, depth - 1)
            return out
        if algo == "ddpg":  # its noise process shares the actor's generator: still shared after the restart
            assert again.actor.noise.rng is again.actor.rng
        before, after = draws(first.actor), draws(again.actor)
        assert before and len(before) == len(after)
        assert all(a != b for a, b in zip(before, after))
    finally:
        first.close()
        again.close()


@pytest.mark.parametrize("algo", ["dqn", "sac"])
def test_a_restarted_actor_node_goes_on_from_the_counters_of_the_last_checkpoint(algo):
    """A node Ray rebuilt from its first arguments starts its counters at 0: a DQN actor would explore at epsilon 1
    again, a SAC actor act uniformly for another warm-up. Given the dead process's checkpointed state with its
    first call, it goes on from there (the same epsilon), with generators of its own process."""
    import numpy as np
    import torch

    from shoal.agents import registry
    from shoal.config import to_dict
    from shoal.envs import env_spec
    from shoal.topologies.nodes import ActorNode, NodeContext

    env = "Pendulum-v1" if algo == "sac" else "CartPole-v1"
    cfg = registry.get(algo).config_cls()(num_envs=2, learning_starts=100)
    ctx = NodeContext(algo, to_dict(cfg), env, env_spec(env), 10_000, 0)
    first, again, third = (ActorNode(ctx, 0, 1, env_seed=11, actor_seed=2) for _ in range(3))
    try:
        first.run(300)
        checkpointed = first.state()
        counter = "env_steps" if algo == "dqn" else "steps"
        assert checkpointed["actor"][counter] == 600
        first.run(1, None, checkpointed)  # a process that lived on (a call that failed transiently) keeps its own
        assert first.actor.state()[counter] == 602
        again.on_restart()
        assert again.actor.state()[counter] == 0  # what the restart alone gives
        again.resume(checkpointed)
        resumed = again.actor.state()
        assert resumed[counter] == 600  # went on from the checkpoint
        # its generators are its own process's, not the dead one's as checkpointed
        assert resumed["rng"] != checkpointed["actor"]["rng"]
        if algo == "sac":
            assert not torch.equal(resumed["generator"], checkpointed["actor"]["generator"])
        if algo == "dqn":
            assert again.actor.epsilon < 1.0 and np.isclose(again.actor.epsilon, first.actor.epsilon, atol=0.01)
        else:
            assert again.actor.steps >= again.actor.random_steps  # past the warm-up: acts by its policy
        again.run(1, None, checkpointed)  # taken on once: a later call passing it again changes nothing
        assert again.actor.state()[counter] == 602
        # a process restarted before any checkpoint went on from zero; a state passed later (the driver retrying a
        # call that failed while the process lived on) does not roll it back
        third.on_restart()
        third.run(5, None, None)
        third.run(1, None, checkpointed)
        assert third.actor.state()[counter] == 12
    finally:
        first.close()
        again.close()
        third.close()


def test_a_resumed_actor_node_takes_the_parameters_of_its_call_whatever_version_was_checkpointed():
    """The checkpointed state holds the version the dead process had adopted; the new process holds none yet, so
    the parameters its first call brings are adopted even when the learner's version has not moved since."""
    from shoal.agents.pg.config import PPOConfig
    from shoal.config import to_dict
    from shoal.envs import env_spec
    from shoal.topologies.nodes import ActorNode, NodeContext

    ctx = NodeContext("ppo", to_dict(PPOConfig(num_envs=1)), "CartPole-v1", env_spec("CartPole-v1"), 100, 0)
    first, again = ActorNode(ctx, 0, 1, env_seed=11, actor_seed=2), ActorNode(ctx, 0, 1, env_seed=11, actor_seed=2)
    try:
        variables = (7, {k: v.clone() for k, v in first.actor.net.state_dict().items()})
        first.actor.load_variables(*variables)  # what a call bringing them adopts first
        checkpointed = first.state()
        assert checkpointed["actor"]["version"] == 7
        again.on_restart()
        again.resume(checkpointed)
        assert again.actor.version == -1
    finally:
        first.close()
        again.close()
