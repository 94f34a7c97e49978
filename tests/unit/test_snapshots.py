"""Every learner's ``get_variables`` is a snapshot: later learner steps never change what it returned."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from shoal.agents import registry
from shoal.backends.inprocess import InProcessBackend
from shoal.envs import env_spec
from shoal.settings import RunConfig
from shoal.topologies.local import LocalProgram
from shoal.topologies.nodes import NodeContext

#: Small settings, applied where an algorithm's config has the field: tiny nets, learning from the start,
#: and a Q-table initialised off the fixed point so that every tabular update moves it.
SMALL = {"hidden": (16, 16), "batch_size": 16, "learning_starts": 0, "buffer_size": 1000, "num_envs": 2,
         "rollout_length": 8, "train_freq": 1, "gradient_steps": 1, "epochs": 1, "minibatch_size": 0, "q_init": 1.0,
         "burn_in": 2, "trace_length": 6}  # R2D2: sequences short enough for random CartPole episodes
ENVS = {"shoal.agents.continuous": "Pendulum-v1", "shoal.agents.tabular": "shoal/Treasure1D-v0",
        "shoal.agents.hdqn": "shoal/StochasticDecision-v0"}  # h-DQN: Discrete observations are its goals


def _program(algo: str) -> LocalProgram:
    spec = registry.get(algo)
    fields = {f.name for f in dataclasses.fields(spec.config_cls())}
    env = next((e for pkg, e in ENVS.items() if spec.builder.startswith(pkg + ".")), "CartPole-v1")
    ctx = NodeContext(algo, {k: v for k, v in SMALL.items() if k in fields}, env, env_spec(env), 10_000, 0)
    return LocalProgram(ctx, RunConfig(steps=10_000, seed=0, num_actors=1), InProcessBackend())


def _storages(tensors: dict[str, torch.Tensor]) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors.values()}


# Board games: test_alphazero_nets.py; offline algorithms (no actors, a dataset): tests/unit/offline/.
@pytest.mark.parametrize("algo", sorted(a for a, s in registry.ALGORITHMS.items()
                                        if a != "alphazero" and s.topology != "offline"))
def test_get_variables_is_a_snapshot_that_later_steps_leave_alone(algo):
    program = _program(algo)
    node = program.learner.node
    version, snapshot = node.get_variables()
    expected = {k: v.clone() for k, v in snapshot.items()}
    live = node.networks.state_dict()
    assert not _storages(snapshot) & _storages(live), "get_variables shares storage with the live parameters"

    for _ in range(2000):  # rounds until the learner has taken a step (REINFORCE: a whole episode; R2D2: a batch of sequences)
        program.run_iteration()
        if node.get_variables()[0] != version:
            break
    assert node.get_variables()[0] != version, "the learner never stepped"
    live = node.networks.state_dict()
    assert any(not torch.equal(live[k].cpu(), expected[k]) for k in expected), "the step changed no parameter"
    for k, v in expected.items():
        assert torch.equal(snapshot[k], v), f"{algo}: the snapshot's {k!r} changed when the learner stepped"
    program.close()
