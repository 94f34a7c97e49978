"""Actor fault tolerance: envs that raise are made anew inside their node; killed actor processes are
restarted by Ray with the newest parameters; a limit turns repeated failures into a clear error."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import psutil
import pytest

import shoal
from shoal.errors import EnvError, ShoalError

SMALL_IMPALA = {"eval_episodes": 0, "num_envs": 2, "rollout_length": 16}


class _Faults:
    """Steps counted over every env copy ever made; the env raises at the listed counts."""

    def __init__(self, at: set[int] | None = None, every: int = 0) -> None:
        self.at, self.every, self.steps, self.raised = set(at or ()), every, 0, 0
        self.lock = threading.Lock()

    def tick(self) -> None:
        with self.lock:
            self.steps += 1
            if self.steps in self.at or (self.every and self.steps % self.every == 0):
                self.raised += 1
                raise RuntimeError(f"simulated simulator crash at step {self.steps}")


class FlakyCartPole(gym.Wrapper):
    def __init__(self, faults: _Faults) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.faults = faults

    def step(self, action):
        self.faults.tick()
        return self.env.step(action)


def _flaky(faults: _Faults):
    def make():
        return FlakyCartPole(faults)

    make.__name__ = "FlakyCartPole"
    return make


@pytest.mark.parametrize("algo,topology", [("impala", "impala"), ("impala", "seed"), ("ga3c", "ga3c"),
                                           ("a3c", "a3c"), ("apex_dqn", "apex")])
def test_an_env_that_raises_is_made_anew_inside_its_node_and_the_run_goes_on(tmp_path, algo, topology):
    faults = _Faults(at={300, 1100})
    overrides = {"eval_episodes": 0, "num_envs": 2}
    if algo == "apex_dqn":
        overrides.update(learning_starts=200, buffer_size=5000, batch_size=32, hidden=(32, 32))
    r = shoal.train(algo, _flaky(faults), steps=3000, seed=0, num_actors=2, topology=topology, run_dir=tmp_path / "run",
                    quiet=True, tensorboard=False, overrides=overrides)
    assert faults.raised == 2
    assert r.env_steps >= 3000
    assert r.history[-1]["env_restarts"] == 2.0  # both failures counted, over all actor nodes
    assert r.history[-1]["actor_restarts"] == 0.0


def test_an_env_raising_more_than_max_restarts_stops_the_run_with_a_clear_error(tmp_path):
    faults = _Faults(every=150)
    with pytest.raises(EnvError, match=r"FlakyCartPole raised 3 times .*RuntimeError.*max_restarts \(now 2\)"):
        shoal.train("impala", _flaky(faults), steps=20_000, seed=0, num_actors=1, run_dir=tmp_path / "run", quiet=True,
                    tensorboard=False, overrides={**SMALL_IMPALA, "max_restarts": 2})
    assert not (tmp_path / "run" / "eval.json").exists()


def test_a_partial_unroll_is_dropped_when_the_env_restarts():
    """The actor's rollout starts over after a new env: every unroll it hands over has T contiguous steps."""
    from shoal.agents.pg.config import PPOConfig
    from shoal.config import to_dict
    from shoal.core.seeding import derive_seed
    from shoal.envs import env_spec, make_vec_env
    from shoal.topologies.nodes import ActorNode, NodeContext

    faults = _Faults(at={21})
    ctx = NodeContext("ppo", to_dict(PPOConfig(num_envs=1, rollout_length=16)), _flaky(faults), env_spec("CartPole-v1"),
                      1000, 0)
    node = ActorNode(ctx, 0, 1, env_seed=1, actor_seed=2)
    _, first = node.run(16)
    _, second = node.run(16)  # the env raises at its 5th step: 4 steps are dropped, 16 fresh ones kept
    assert faults.raised == 1 and node.env.restarts == 1 and node.env.take_restarts() == 1
    assert first.obs.shape[0] == second.obs.shape[0] == 16
    # the unroll starts at the new env's first observation (its seed derived for the first restart),
    # not at the interrupted episode's 5th state
    fresh = make_vec_env(_flaky(_Faults()), 1, seed=derive_seed(1, "restart", 1), mode=ctx.vector)
    np.testing.assert_array_equal(second.obs[0], fresh.obs)
    node.close()
    fresh.close()


def _kill_one_actor(title: str, metrics: Path, rows: int, done: threading.Event, killed: list[int],
                    timeout: float = 100.0) -> None:
    """Once ``metrics`` holds ``rows`` rows (the run is producing), SIGKILL one Ray worker process whose
    title is ``title`` (e.g. an actor node busy in its ``collect`` call)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and not done.is_set():
        if metrics.exists() and len(metrics.read_text().splitlines()) > rows:
            for p in psutil.process_iter(["pid", "cmdline"]):
                if any(part.startswith(title) for part in (p.info["cmdline"] or [])):
                    os.kill(p.info["pid"], signal.SIGKILL)
                    killed.append(p.info["pid"])
                    return
        time.sleep(0.1)


def _train_and_kill(tmp_path, steps: int, rows: int = 3, title: str = "ray::ImpalaActorNode.collect",
                    algo: str = "impala", env: str = "CartPole-v1", **kw):
    done, killed = threading.Event(), []
    run_dir = tmp_path / "run"
    t = threading.Thread(target=_kill_one_actor, args=(title, run_dir / "metrics.csv", rows, done, killed), daemon=True)
    t.start()
    try:
        r = shoal.train(algo, env, steps=steps, seed=0, num_actors=2, backend="ray", run_dir=run_dir,
                        quiet=True, tensorboard=False, **kw)
    finally:
        done.set()
        t.join(5.0)
    return r, killed


#: Per topology: the algorithm, env, the title of an actor node's process busy in its call, steps, metric rows
#: logged before the kill, overrides. Short runs; each kill lands while most of the step budget is still to go.
#: The local topology's calls are rounds of a few milliseconds, so its title is the class's alone, which Ray
#: shows between calls too (``ray::ActorNode``, ``ray::ActorNode.run`` in a call): a poll every 0.1 s can miss
#: every round of a run that ends within seconds.
KILLED_ACTORS = [
    pytest.param("impala", "CartPole-v1", "impala", "ray::ImpalaActorNode.collect", 40_000, 6,
                 {**SMALL_IMPALA, "log_every": 1000}, id="impala"),
    pytest.param("gorila", "CartPole-v1", "gorila", "ray::GorilaActorNode.work", 4_000, 2,
                 {"eval_episodes": 0, "num_envs": 2, "learning_starts": 200, "log_every": 250, "topology.num_shards": 1},
                 id="gorila"),
    pytest.param("dppo", "CartPole-v1", "dppo", "ray::DPPOWorkerNode.work", 6_000, 2,
                 {"eval_episodes": 0, "num_envs": 2, "rollout_length": 32, "topology.rounds_per_rollout": 2,
                  "log_every": 256}, id="dppo"),
    pytest.param("ppo", "CartPole-v1", "local", "ray::ActorNode", 4_000, 2,
                 {"eval_episodes": 0, "num_envs": 2, "rollout_length": 32, "log_every": 128}, id="local"),
    pytest.param("alphazero", "tictactoe", "alphazero", "ray::SelfPlayNode.run", 400, 2,
                 {"simulations": 8, "leaf_batch": 4, "games_per_actor": 4, "channels": 8, "blocks": 1, "value_hidden": 8,
                  "batch_size": 32, "min_replay": 32, "buffer_size": 2000, "eval_games": 0, "log_every": 32,
                  "topology.moves_per_call": 16}, id="alphazero"),
]


@pytest.mark.ray
@pytest.mark.timeout(120)
@pytest.mark.parametrize("algo,env,topology,title,steps,rows,overrides", KILLED_ACTORS)
def test_a_killed_actor_process_is_restarted_and_the_run_goes_on(tmp_path, algo, env, topology, title, steps, rows,
                                                                 overrides):
    r, killed = _train_and_kill(tmp_path, steps, rows=rows, title=title, algo=algo, env=env, topology=topology,
                                overrides=overrides)
    assert len(killed) == 1 and not psutil.pid_exists(killed[0])
    assert r.env_steps >= steps  # the run finished its budget
    assert max(h.get("actor_restarts", 0.0) for h in r.history) == 1.0  # the death was seen and counted, once
    if topology == "impala":
        learned = [h for h in r.history if "learner_env_steps" in h]
        assert learned[-1]["learner_env_steps"] > 0.8 * 40_000  # the learner kept consuming after the kill
        # the new process acted with the newest parameters, not the initial ones: none of its unrolls lagged
        # past max_policy_lag (32 versions; the learner was about 100 versions on when the actor died)
        assert learned[-1]["dropped_unrolls"] == 0.0


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_an_actor_dying_more_often_than_max_restarts_is_a_clear_error(tmp_path):
    with pytest.raises(ShoalError, match=r"actor node \d died 1 times, more than max_restarts=0"):
        _train_and_kill(tmp_path, 10**7, overrides={**SMALL_IMPALA, "max_restarts": 0, "log_every": 1000})


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_a_dead_service_node_stops_the_run_with_an_error_naming_it(tmp_path):
    """Only actors are restarted: the queue's death is not blamed on the actors that called it."""
    with pytest.raises(ShoalError, match=r"node queue died .*only actor nodes are restarted.*--resume"):
        _train_and_kill(tmp_path, 10**7, title="ray::QueueNode", overrides={**SMALL_IMPALA, "log_every": 1000})


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_impala_with_a_killed_actor_still_reaches_its_return(tmp_path):
    r, killed = _train_and_kill(tmp_path, 300_000, rows=10,
                                overrides={"eval_every": 20_000, "target_return": 475, "eval_episodes": 20})
    print(f"impala ray, one actor killed: eval {r.eval['mean_return']:.1f} after {r.env_steps} steps")
    assert len(killed) == 1
    assert max(h.get("actor_restarts", 0.0) for h in r.history) == 1.0
    assert r.eval["mean_return"] >= 475, r.eval
