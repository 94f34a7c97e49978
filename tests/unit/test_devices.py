"""Device placement: learner nodes get a GPU when the run's device is cuda, and every learner runs there.

The tests marked ``cuda`` need a CUDA GPU and skip without one; run them with
``python -m pytest -m cuda``. The others check, on any machine, what the topologies ask
the backends for and how ``device`` settings resolve.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Iterator

import pytest
import torch

import shoal
from shoal.agents import registry
from shoal.backends.inprocess import InProcessBackend
from shoal.core.device import learner_gpus, randn
from shoal.core.interfaces import Table
from shoal.envs import env_spec
from shoal.errors import ConfigError
from shoal.io.checkpoint import load_checkpoint, save_checkpoint
from shoal.settings import RunConfig
from shoal.topologies import TOPOLOGIES, get_topology
from shoal.topologies.apex import ApexProgram
from shoal.topologies.local import LocalProgram
from shoal.topologies.nodes import ActorNode, LearnerNode, NodeContext

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU: torch.cuda.is_available() is False")

#: Small settings, applied where an algorithm's config has the field. One PPO epoch over the
#: whole batch makes a PPO step a single gradient step, so its losses are those of the initial weights.
SMALL = {"hidden": (16, 16), "batch_size": 16, "learning_starts": 0, "buffer_size": 1000, "num_envs": 2,
         "rollout_length": 8, "train_freq": 1, "gradient_steps": 1, "epochs": 1, "minibatch_size": 0, "q_init": 1.0}
ENVS = {"shoal.agents.continuous": "Pendulum-v1", "shoal.agents.tabular": "shoal/Treasure1D-v0"}
#: Tabular learners hold a numpy Q-table: there is nothing to place on a GPU.
#: Offline algorithms learn from a dataset file and have no actors (their learners: tests/unit/offline/).
TORCH_ALGOS = sorted(a for a, s in registry.ALGORITHMS.items() if not s.builder.startswith("shoal.agents.tabular.")
                     and s.topology != "offline")


def _ctx(algo: str, device: str = "cpu") -> NodeContext:
    spec = registry.get(algo)
    fields = {f.name for f in dataclasses.fields(spec.config_cls())}
    env = next((e for pkg, e in ENVS.items() if spec.builder.startswith(pkg + ".")), "CartPole-v1")
    return NodeContext(algo, {k: v for k, v in SMALL.items() if k in fields}, env, env_spec(env), 10_000, 0, device=device)


# -- what the topologies ask the backends for (no GPU needed) ----------------------------------------


class _FakeActor:
    """Stands in for a Ray actor handle: every method call returns a dummy object ref."""

    def __getattr__(self, method: str) -> Any:
        class _Method:
            def options(self, **_: Any) -> "_Method":
                return self

            def remote(self, *args: Any, **kwargs: Any) -> object:
                return object()

        return _Method()


class _FakeRay:
    """The parts of the ``ray`` module RayBackend uses; ``remote`` checks its options with the real Ray and records them."""

    def __init__(self, gpus: float = 0.0) -> None:
        import ray

        self.real = ray
        self.gpus = gpus
        self.spawned: list[tuple[type, dict[str, Any]]] = []

    def is_initialized(self) -> bool:
        return True  # RayBackend then connects to nothing

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 4.0, **({"GPU": self.gpus} if self.gpus else {})}

    def remote(self, **options: Any) -> Any:
        def wrap(cls: type) -> Any:
            self.real.remote(**options)(cls)  # raises on an option Ray does not know
            self.spawned.append((cls, options))

            class _Remote:
                @staticmethod
                def remote(*args: Any, **kwargs: Any) -> _FakeActor:
                    return _FakeActor()

            return _Remote

        return wrap

    def kill(self, actor: Any) -> None:
        pass


@pytest.fixture
def fake_ray(monkeypatch):
    import shoal.backends.ray as ray_backend

    fake = _FakeRay()
    monkeypatch.setattr(ray_backend, "ray", fake)
    return fake


#: Every topology, run with the first algorithm it is the default of (PPO where there is none), and SAC on the local one.
#: (alphazero's nodes are built from a game context and train on the CPU only: its runner refuses other devices.)
TOPOLOGY_CASES = [(t, next((a for a, s in sorted(registry.ALGORITHMS.items()) if s.topology == t), "ppo"))
                  for t in sorted(TOPOLOGIES) if t != "alphazero"] + [("local", "sac")]


@pytest.mark.parametrize("topology,algo", TOPOLOGY_CASES)
@pytest.mark.parametrize("device,gpus", [("cuda", 1.0), ("cpu", 0.0)])
def test_on_ray_the_learner_node_asks_for_one_gpu_on_cuda_and_actors_for_none(fake_ray, topology, algo, device, gpus):
    from shoal.backends.ray import RayBackend

    backend = RayBackend()
    get_topology(topology)(_ctx(algo, device), RunConfig(steps=10_000, num_actors=2), backend)
    def is_learner(cls: type) -> bool:  # Ape-X's learner node is its own class; A3C's parameter node is a LearnerNode
        return issubclass(cls, LearnerNode) or cls.__name__.endswith("LearnerNode")

    learners = [o["num_gpus"] for cls, o in fake_ray.spawned if is_learner(cls)]
    others = {cls.__name__: o["num_gpus"] for cls, o in fake_ray.spawned if not is_learner(cls)}
    if topology == "ga3c":  # inference on the learner's device: trainer and predictor share the GPU
        assert learners == [gpus / 2] and others.pop("PredictorNode") == gpus / 2
    else:
        assert learners == [gpus] * (2 if topology == "gorila" else 1)  # GORILA: one learner per bundle (2 here)
    # actors (env workers), servers; the offline topology places its learner alone
    assert len(fake_ray.spawned) >= (1 if topology == "offline" else 3) and all(g == 0 for g in others.values())
    backend.shutdown()  # the nodes never ran: nothing for the program to drain


@pytest.mark.parametrize("topology,node", [("seed", "SeedLearnerNode"), ("ga3c", "PredictorNode")])
def test_batched_inference_is_placed_on_the_inference_device(fake_ray, topology, node):
    """SEED's server and GA3C's predictor take a GPU for inference_device=cuda while the learner stays on the CPU."""
    import dataclasses

    from shoal.backends.ray import RayBackend

    backend = RayBackend()
    ctx = dataclasses.replace(_ctx("impala" if topology == "seed" else "ga3c", "cpu"), inference_device="cuda")
    assert ctx.inference_on == "cuda" and dataclasses.replace(ctx, inference_device="").inference_on == "cpu"
    get_topology(topology)(ctx, RunConfig(steps=10_000, num_actors=2), backend)
    gpus = {cls.__name__: o["num_gpus"] for cls, o in fake_ray.spawned}
    assert gpus[node] == 1.0
    assert all(g == 0 for name, g in gpus.items() if name != node)  # actors, queues, and GA3C's trainer
    backend.shutdown()


@pytest.mark.parametrize("topology,algo", [(LocalProgram, "ppo"), (ApexProgram, "apex_dqn")])
def test_inprocess_backend_records_each_nodes_resources(topology, algo):
    backend = InProcessBackend()
    program = topology(_ctx(algo, "cpu"), RunConfig(steps=10_000, num_actors=2), backend)
    assert [(p.name, p.num_gpus) for p in backend.placements if p.name.startswith(("learner", "actor"))] == \
        [("learner", 0.0), ("actor-0", 0.0), ("actor-1", 0.0)]
    program.close()


def test_learner_gpus():
    assert [learner_gpus(d) for d in ("cuda", "cuda:1", "cpu")] == [1.0, 1.0, 0.0]


# -- resolving device=auto / cuda --------------------------------------------------------------------


def test_ray_resolves_auto_from_the_cluster_not_the_driver(fake_ray):
    from shoal.backends.ray import RayBackend

    fake_ray.gpus = 1.0  # this driver may have no GPU (this machine has none), the cluster has one
    backend = RayBackend()
    assert backend.resolve_device("auto") == "cuda"
    assert backend.resolve_device("cuda") == "cuda"
    assert backend.resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="use device=cuda"):
        backend.resolve_device("cuda:1")  # Ray picks the GPU and shows the learner only that one
    fake_ray.gpus = 0.0
    assert backend.resolve_device("auto") == "cpu"
    with pytest.raises(ConfigError, match="cluster has no GPU"):
        backend.resolve_device("cuda")  # rather than a learner that waits forever for a GPU


def test_inprocess_resolves_auto_from_this_process():
    backend = InProcessBackend()
    assert backend.resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    assert backend.resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="CUDA device"):
        backend.resolve_device("cuda:99")


@pytest.mark.skipif(HAS_CUDA, reason="checks the error given without a GPU")
def test_a_cuda_run_without_a_gpu_fails_with_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        shoal.train("ppo", "CartPole-v1", steps=64, run_dir=tmp_path / "run", quiet=True, tensorboard=False,
                    overrides={"device": "cuda", "eval_episodes": 0})
    assert not (tmp_path / "run").exists()


def test_learner_noise_does_not_depend_on_the_device():
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(randn((4, 2), a, "cpu"), torch.randn(4, 2, generator=b))
    if HAS_CUDA:
        assert torch.equal(randn((4, 2), a, "cuda").cpu(), torch.randn(4, 2, generator=b))


# -- every learner on CUDA (skipped without a GPU) ---------------------------------------------------


def _tensors(tree: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(tree, torch.Tensor):
        yield path, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from _tensors(v, f"{path}.{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _tensors(v, f"{path}[{i}]")


def _placed_tensors(learner: Any) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]]:
    """The learner's network tensors (parameters and buffers, targets included) and its optimisers' state tensors."""
    nets, opt_state = [], []
    objects = [(n, o) for n, o in vars(learner).items()]
    objects += [(f"{n}[{i}]", x) for n, o in vars(learner).items() if isinstance(o, (list, tuple)) for i, x in enumerate(o)]
    for name, obj in objects:
        if isinstance(obj, torch.nn.Module):
            nets += [(f"{name}.{k}", t) for k, t in obj.state_dict(keep_vars=True).items()]
        elif not isinstance(obj, Table) and callable(getattr(obj, "step", None)):
            state = obj.state_dict() if callable(getattr(obj, "state_dict", None)) else \
                obj.state() if callable(getattr(obj, "state", None)) else None
            opt_state += list(_tensors(state, name))
    return nets, opt_state


def _collect(ctx: NodeContext, vector_steps: int = 200) -> list[Any]:
    """What one CPU actor hands over in ``vector_steps`` (several hand-overs: REINFORCE needs whole episodes)."""
    actor = ActorNode(ctx, 0, 1, 11, 12)
    builder = actor.builder
    pieces = []
    for _ in range(-(-vector_steps // builder.steps_per_iteration)):
        pieces.append(actor.run(builder.steps_per_iteration)[1])
    actor.close()
    return pieces


def _one_step(node: LearnerNode, pieces: list[Any]) -> dict[str, float]:
    """One learner step on ``pieces``, through the learner node's own routing of actor data."""
    node.builder.learner_steps_due = lambda env_steps, learner_steps: 1  # type: ignore[method-assign]
    return node.learn(10_000, *copy.deepcopy(pieces))  # learners may take over what they are given


def _assert_on_cuda(learner: Any) -> None:
    nets, opt_state = _placed_tensors(learner)
    assert nets and opt_state, "found no network or no optimiser state to check"
    off = [n for n, t in nets + opt_state if t.device.type != "cuda"]
    assert not off, f"not on the GPU: {off}"


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("algo", TORCH_ALGOS)
def test_every_learner_steps_on_cuda_with_the_losses_it_has_on_the_cpu(algo):
    pieces = _collect(_ctx(algo))
    cpu, gpu = LearnerNode(_ctx(algo, "cpu")), LearnerNode(_ctx(algo, "cuda"))
    for k, v in cpu.networks.state_dict().items():
        assert torch.equal(v, gpu.networks.state_dict()[k].cpu()), f"{k}: initial weights differ"
    m_cpu, m_gpu = _one_step(cpu, pieces), _one_step(gpu, pieces)
    losses = sorted(k for k in m_cpu if k.startswith("loss"))
    assert losses, f"{algo} reported no loss: {sorted(m_cpu)}"
    for k in losses:
        assert abs(m_gpu[k] - m_cpu[k]) <= 1e-4 * max(1.0, abs(m_cpu[k])), f"{k}: cuda {m_gpu[k]} vs cpu {m_cpu[k]}"
    _assert_on_cuda(gpu.learner)
    version, variables = gpu.get_variables()
    assert version == cpu.get_variables()[0] and all(v.device.type == "cpu" for v in variables.values())


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("algo", TORCH_ALGOS)
def test_a_cuda_learner_resumes_from_a_cpu_state_onto_the_gpu(algo, tmp_path):
    pieces = _collect(_ctx(algo))
    cpu = LearnerNode(_ctx(algo, "cpu"))
    _one_step(cpu, pieces)
    # Through a checkpoint file, as a resumed run does: every tensor comes back on the CPU.
    state, _ = load_checkpoint(save_checkpoint(tmp_path / "ckpt", {"learner": cpu.learner.state()}))
    gpu = LearnerNode(_ctx(algo, "cuda"))
    gpu.learner.load_state(state["learner"])
    _one_step(gpu, pieces)
    _assert_on_cuda(gpu.learner)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("algo", TORCH_ALGOS)
def test_a_local_run_on_cuda_places_only_the_learner_on_the_gpu(algo):
    backend = InProcessBackend()
    program = LocalProgram(_ctx(algo, backend.resolve_device("auto")), RunConfig(steps=10_000, num_actors=2), backend)
    assert [(p.name, p.num_gpus) for p in backend.placements] == [("learner", 1.0), ("actor-0", 0.0), ("actor-1", 0.0)]
    for _ in range(3):
        program.run_iteration()
    _assert_on_cuda(program.learner.node.learner)
    assert all(t.device.type == "cpu" for a in program.actors for _, t in _placed_tensors(a.node.actor)[0])
    program.eval_policy()(program.actors[0].node.env.obs)  # evaluation acts on the CPU with the learner's weights
    program.close()


@pytest.mark.ray
def test_a_local_ray_instance_resolves_the_device_from_its_resources():
    import ray

    from shoal.backends.ray import RayBackend

    backend = RayBackend(num_cpus=1)
    try:
        has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
        assert backend.resolve_device("auto") == ("cuda" if has_gpu else "cpu")
        if not has_gpu:
            with pytest.raises(ConfigError, match="cluster has no GPU"):
                backend.resolve_device("cuda")
    finally:
        backend.shutdown()


@pytest.mark.cuda
@pytest.mark.ray
@needs_cuda
@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_a_ray_run_on_cuda_trains_its_learner_on_the_gpu(algo, tmp_path):
    """Ray shows a GPU only to actors that ask for one: the learner node must, or moving its networks fails."""
    env, extra = ("Pendulum-v1", {"learning_starts": 256}) if algo == "sac" else ("CartPole-v1", {})
    r = shoal.train(algo, env, steps=512, run_dir=tmp_path / "run", backend="ray", num_actors=1, quiet=True,
                    tensorboard=False, overrides={"device": "cuda", "eval_episodes": 1, **extra})
    assert r.env_steps >= 512


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("topology,algo", [("seed", "impala"), ("ga3c", "ga3c")])
def test_seed_and_ga3c_infer_on_the_gpu_while_actors_step_on_the_cpu(topology, algo):
    """CPU sampling with GPU forward: the inference copy is on CUDA, actions come back as CPU arrays."""
    import dataclasses

    from shoal.backends.threaded import ThreadedBackend

    backend = ThreadedBackend()
    ctx = dataclasses.replace(_ctx(algo, "cpu"), inference_device="cuda")
    program = get_topology(topology)(ctx, RunConfig(steps=10_000, num_actors=2), backend)
    try:
        steps = sum(program.run_iteration().env_steps for _ in range(6))
        assert steps > 0
        node = next(w.node for w in backend.workers if type(w.node).__name__ in ("SeedLearnerNode", "PredictorNode"))
        net = node.infer_net if topology == "seed" else node.net
        assert all(p.device.type == "cuda" for p in net.parameters())
    finally:
        program.close()
