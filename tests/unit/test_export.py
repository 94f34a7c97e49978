"""Exported policies (ONNX, TorchScript) act as the agent's evaluation policy does, and run without shoal."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from shoal.agents import registry
from shoal.config import build
from shoal.core.types import EnvSpec
from shoal.envs.make import env_spec
from shoal.errors import ConfigError
from shoal.run.export import export_policy

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ATARI = EnvSpec("ALE/Breakout-v5", (4, 84, 84), np.dtype(np.uint8), True, 4)
#: Two action dimensions with bounds neither symmetric nor alike.
ASYMMETRIC = EnvSpec("Asymmetric", (3,), np.dtype(np.float32), False, 2,
                     np.array([-1.1, 0.0], np.float32), np.array([3.3, 1.0], np.float32))


def _agent(algo: str, spec: EnvSpec, **settings):
    """A builder and fresh networks, with observation statistics and weights made far from their defaults."""
    s = registry.get(algo)
    builder = s.builder_cls()(build(s.config_cls(), settings), spec, seed=3)
    with torch.random.fork_rng(devices=[]):  # the initial weights are drawn from torch's global generator
        torch.manual_seed(11)
        net = builder.make_networks()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in net.modules():
            if type(m).__name__ == "ObsNormalizer" and m.enabled:
                m.mean.copy_(torch.randn(m.mean.shape, generator=gen))
                m.var.copy_(torch.rand(m.var.shape, generator=gen) * 4 + 0.25)
        # Actor-critic policy heads start near zero (gain 0.01): scale them up so that actions differ across
        # inputs (and Gaussian means, some past the clipped bounds). DDPG/TD3/SAC actors stay as made:
        # scaled, their tanh would saturate at the bounds for every input. Every other parameter grows a little.
        for name, p in net.named_parameters():
            if name.startswith("pi.") and not name.endswith("log_std"):
                p.mul_(400.0)
            elif not name.startswith(("policy.", "policy_target.")):
                p.mul_(3.0)
    return builder, net


def _observations(spec: EnvSpec, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if spec.obs_dtype == np.uint8:
        return rng.integers(0, 256, (n, *spec.obs_shape), dtype=np.uint8)
    return (rng.normal(size=(n, *spec.obs_shape)) * 5).astype(np.float32)


def _shoal_actions(builder, net, obs: np.ndarray) -> np.ndarray:
    """What shoal's evaluation plays: the evaluation policy, clipped to the bounds as evaluate() clips."""
    actions = np.asarray(builder.make_policy(net, evaluation=True)(obs))
    spec = builder.env_spec
    return actions if spec.discrete else np.clip(actions, spec.action_low, spec.action_high)


def _onnx_actions(path, obs: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["action"], {"obs": obs})[0]


@pytest.mark.parametrize("algo,spec_id,settings", [
    ("ppo", "CartPole-v1", {"normalize_obs": True}),
    ("sac", "Pendulum-v1", {"normalize_obs": True}),
    ("td3", "Pendulum-v1", {"normalize_obs": True}),
    ("ppo", "Pendulum-v1", {"normalize_obs": True}),
    ("ddpg", "Pendulum-v1", {"normalize_obs": True}),
    ("dqn", "CartPole-v1", {"dueling": True}),
    ("sac", ASYMMETRIC, {}),
    ("td3", ASYMMETRIC, {}),
    ("ppo", ASYMMETRIC, {}),
])
def test_onnx_mlp_policy_matches_the_agents_greedy_actions(tmp_path, algo, spec_id, settings):
    spec = spec_id if isinstance(spec_id, EnvSpec) else env_spec(spec_id)
    builder, net = _agent(algo, spec, **settings)
    path = export_policy(builder, net, tmp_path / "policy.onnx")
    obs = _observations(spec, 64)  # another batch size than the export traced with
    got, want = _onnx_actions(path, obs), _shoal_actions(builder, net, obs)
    if spec.discrete:
        assert got.dtype == np.int64 and got.shape == (64,)
        np.testing.assert_array_equal(got, want)
        assert len(np.unique(want)) > 1  # the observations reach more than one action
    else:
        assert got.dtype == np.float32 and got.shape == (64, spec.num_actions)
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.ptp(want) > 0.1
        bounds = np.stack([spec.action_low, spec.action_high])
        if algo == "ppo":  # Gaussian means beyond the bounds are clipped, as evaluation clips them
            at_bound = (want == bounds[0]) | (want == bounds[1])
            assert at_bound.any() and not at_bound.all()
        assert (got >= spec.action_low).all() and (got <= spec.action_high).all()
        for d in range(spec.num_actions):  # actions spread over each dimension's own range
            assert np.ptp(want[:, d]) > 0.2 * (spec.action_high[d] - spec.action_low[d])


@pytest.mark.parametrize("algo", ["dqn", "ppo"])
def test_onnx_cnn_policy_matches_the_agents_greedy_actions(tmp_path, algo):
    builder, net = _agent(algo, ATARI)
    path = export_policy(builder, net, tmp_path / "policy.onnx")
    obs = _observations(ATARI, 12)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(uint8)"  # frames go in as the env returns them
    np.testing.assert_array_equal(_onnx_actions(path, obs), _shoal_actions(builder, net, obs))


def test_onnx_q_table_policy_matches_the_agent_ties_included(tmp_path):
    spec = env_spec("FrozenLake-v1")
    builder, net = _agent("q_learning", spec)
    q = torch.randn(net.q.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    q[:4] = 0.5  # rows of equal values: greedy ties go to the first action
    net.q.copy_(q)
    path = export_policy(builder, net, tmp_path / "table.onnx")
    obs = np.arange(spec.num_obs_states, dtype=np.int64)
    got = _onnx_actions(path, obs)
    np.testing.assert_array_equal(got, _shoal_actions(builder, net, obs))
    assert (got[:4] == 0).all() and len(np.unique(got)) > 1


def test_exported_files_describe_their_inputs_and_the_action_space(tmp_path):
    import onnx

    spec = env_spec("Pendulum-v1")
    builder, net = _agent("sac", spec)
    path = export_policy(builder, net, tmp_path / "p.onnx", metadata={"algo": "sac", "env": "Pendulum-v1"})
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["shoal"])
    assert meta["inputs"] == ["obs"] and meta["outputs"] == ["action"]
    assert meta["obs_shape"] == [3] and meta["obs_dtype"] == "float32" and not meta["discrete"]
    assert meta["action_low"] == [-2.0] and meta["action_high"] == [2.0]
    assert meta["algo"] == "sac" and meta["env"] == "Pendulum-v1"
    ts = export_policy(builder, net, tmp_path / "p.pt", "torchscript", metadata={"algo": "sac"})
    extra = {"shoal.json": ""}
    torch.jit.load(str(ts), _extra_files=extra)
    assert json.loads(extra["shoal.json"])["action_high"] == [2.0]


def test_torchscript_policy_matches_onnx_and_the_agent(tmp_path):
    spec = env_spec("CartPole-v1")
    builder, net = _agent("ppo", spec, normalize_obs=True)
    ts = export_policy(builder, net, tmp_path / "policy.pt", "torchscript")
    obs = _observations(spec, 33)
    got = torch.jit.load(str(ts))(torch.from_numpy(obs))
    assert not got.requires_grad  # readable without torch.no_grad()
    np.testing.assert_array_equal(got.numpy(), _shoal_actions(builder, net, obs))


def test_recurrent_policy_exports_as_one_step_with_its_lstm_state(tmp_path):
    spec = env_spec("CartPole-v1")
    builder, net = _agent("ppo", spec, recurrent=True, normalize_obs=True, critic_lstm=True, lstm_hidden=16)
    path = export_policy(builder, net, tmp_path / "lstm.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["obs", "h", "c", "episode_start"]
    assert [o.name for o in sess.get_outputs()] == ["action", "h_out", "c_out"]
    B, steps = 5, 12
    seq = [_observations(spec, B, seed=t) for t in range(steps)]
    policy = builder.make_policy(net, evaluation=True)  # shoal's: zero state on its first call, then carried
    h = np.zeros((net.lstm_layers, B, net.lstm_hidden), np.float32)
    c = np.zeros_like(h)
    start = np.ones(B, bool)
    for t, obs in enumerate(seq):
        want = policy(obs)
        got, h_next, c_next = sess.run(None, {"obs": obs, "h": h, "c": c, "episode_start": start})
        np.testing.assert_array_equal(got, want, err_msg=f"step {t}")
        h, c, start = h_next, c_next, np.zeros(B, bool)
    assert np.abs(h).max() > 0  # the state is carried, not reset

    # episode_start zeroes the state entering the step: a carried state then counts for nothing.
    fresh = sess.run(None, {"obs": seq[0], "h": np.zeros_like(h), "c": np.zeros_like(c), "episode_start": np.zeros(B, bool)})
    reset = sess.run(None, {"obs": seq[0], "h": h, "c": c, "episode_start": np.ones(B, bool)})
    for a, b in zip(fresh, reset):
        np.testing.assert_allclose(a, b, atol=1e-6)
    carried = sess.run(None, {"obs": seq[0], "h": h, "c": c, "episode_start": np.zeros(B, bool)})
    assert not np.allclose(carried[1], fresh[1])


def _onnx_step(path):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda obs, h, c, start: sess.run(None, {"obs": obs, "h": h, "c": c, "episode_start": start})


def _torchscript_step(path):
    module = torch.jit.load(str(path))

    def step(obs, h, c, start):
        out = module(*(torch.from_numpy(x) for x in (obs, h, c, start)))
        return [t.numpy() for t in out]
    return step


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("spec_id", ["CartPole-v1", "Pendulum-v1"])
def test_recurrent_policy_steps_match_the_agent_in_both_formats(tmp_path, fmt, spec_id):
    spec = env_spec(spec_id)
    builder, net = _agent("ppo", spec, recurrent=True, normalize_obs=True, lstm_hidden=16)
    path = export_policy(builder, net, tmp_path / ("lstm.onnx" if fmt == "onnx" else "lstm.pt"), fmt)
    step = _onnx_step(path) if fmt == "onnx" else _torchscript_step(path)
    B = 5
    policy = builder.make_policy(net, evaluation=True)
    h = np.zeros((net.lstm_layers, B, net.lstm_hidden), np.float32)
    c, start = np.zeros_like(h), np.ones(B, bool)
    wants = []
    for t in range(8):
        obs = _observations(spec, B, seed=200 + t)
        want = policy(obs)
        if not spec.discrete:
            want = np.clip(want, spec.action_low, spec.action_high)
        got, h, c = step(obs, h, c, start)
        if spec.discrete:
            np.testing.assert_array_equal(got, want, err_msg=f"step {t}")
        else:
            assert got.dtype == np.float32 and got.shape == (B, 1)
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"step {t}")
            assert (got >= spec.action_low).all() and (got <= spec.action_high).all()
        wants.append(want)
        start = np.zeros(B, bool)
    assert len(np.unique(np.concatenate(wants))) > 1


def test_mixed_episode_start_resets_only_its_own_rows(tmp_path):
    spec = env_spec("Pendulum-v1")
    builder, net = _agent("ppo", spec, recurrent=True, lstm_hidden=16)
    step = _onnx_step(export_policy(builder, net, tmp_path / "lstm.onnx"))
    B = 6
    h = np.zeros((net.lstm_layers, B, net.lstm_hidden), np.float32)
    c, start = np.zeros_like(h), np.ones(B, bool)
    for t in range(4):  # a carried state, different in every row
        _, h, c = step(_observations(spec, B, seed=300 + t), h, c, start)
        start = np.zeros(B, bool)
    obs = _observations(spec, B, seed=400)
    mixed = np.array([True, False, True, False, False, True])
    (a, h_out, c_out), fresh, carried = step(obs, h, c, mixed), step(obs, h, c, np.ones(B, bool)), step(obs, h, c, np.zeros(B, bool))
    np.testing.assert_allclose(a[mixed], fresh[0][mixed], atol=1e-6)
    np.testing.assert_allclose(a[~mixed], carried[0][~mixed], atol=1e-6)
    for i, state in ((1, h_out), (2, c_out)):  # [layers, B, hidden]: the batch is axis 1
        np.testing.assert_allclose(state[:, mixed], fresh[i][:, mixed], atol=1e-6)
        np.testing.assert_allclose(state[:, ~mixed], carried[i][:, ~mixed], atol=1e-6)
        assert not np.allclose(fresh[i][:, ~mixed], carried[i][:, ~mixed])  # the kept states matter


def test_continuous_actions_at_a_saturated_tanh_stay_inside_the_bounds(tmp_path):
    # In float32, bias - scale lands one rounding step below these lows: the exported actor must clip.
    low, high = np.array([-1.1, 1.0663577], np.float32), np.array([3.3, 4.740891], np.float32)
    spec = EnvSpec("Rounding", (3,), np.dtype(np.float32), False, 2, low, high)
    builder, net = _agent("ddpg", spec)
    with torch.no_grad():
        net.policy.net[-1].bias.fill_(-1e3)  # tanh(-1000) == -1 exactly
    path = export_policy(builder, net, tmp_path / "p.onnx")
    obs = _observations(spec, 16)
    got = _onnx_actions(path, obs)
    assert (net.scale_action(-torch.ones(2)).numpy() < low).all()  # unclipped, the action leaves the bounds
    np.testing.assert_array_equal(got, np.broadcast_to(low, got.shape))
    np.testing.assert_array_equal(got, _shoal_actions(builder, net, obs))


def _stored_tensor_bytes(path, fmt: str) -> int:
    """Bytes of the weights a file stores: ONNX initializers, or the tensor records of a TorchScript zip."""
    if fmt == "onnx":
        import onnx

        return sum(len(t.raw_data) or 4 * int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)
    import zipfile

    with zipfile.ZipFile(path) as z:
        return sum(i.file_size for i in z.infolist() if "/data/" in i.filename or "/constants/" in i.filename)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_files_hold_the_actor_but_not_the_critics(tmp_path, fmt):
    spec = env_spec("Pendulum-v1")
    builder, net = _agent("ddpg", spec)
    actor = 4 * sum(p.numel() for n, p in net.named_parameters() if n.startswith("policy."))
    critics = 4 * sum(p.numel() for n, p in net.named_parameters() if n.startswith("critic"))
    assert critics > actor
    path = export_policy(builder, net, tmp_path / ("p.onnx" if fmt == "onnx" else "p.pt"), fmt)
    stored = _stored_tensor_bytes(path, fmt)
    assert actor <= stored < actor + 1024  # the actor's weights and a few small buffers (action scale, bias)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_files_get_the_mode_open_gives(tmp_path, fmt):
    ref = tmp_path / "ref"
    ref.write_text("")
    mode = ref.stat().st_mode & 0o777
    if mode == 0o600:
        pytest.skip("the umask here makes private files anyway")
    builder, net = _agent("ppo", env_spec("CartPole-v1"))
    path = export_policy(builder, net, tmp_path / ("p.onnx" if fmt == "onnx" else "p.pt"), fmt)
    assert path.stat().st_mode & 0o777 == mode  # readable by whoever the umask lets read, not 0600


def test_r2d2_policy_exports_as_one_step_of_its_recurrent_q_network(tmp_path):
    spec = env_spec("CartPole-v1")
    builder, net = _agent("r2d2", spec)
    path = export_policy(builder, net, tmp_path / "r2d2.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    policy = builder.make_policy(net, evaluation=True)
    B = 6
    h = np.zeros(tuple(s.shape for s in net.initial_state(B))[0], np.float32)
    c, start = np.zeros_like(h), np.ones(B, bool)
    seen = set()
    for t in range(10):
        obs = _observations(spec, B, seed=100 + t)
        want = policy(obs)
        got, h, c = sess.run(None, {"obs": obs, "h": h, "c": c, "episode_start": start})
        np.testing.assert_array_equal(got, want, err_msg=f"step {t}")
        seen.update(want.tolist())
        start = np.zeros(B, bool)
    assert len(seen) > 1
    import onnx

    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["shoal"])
    assert meta["recurrent"] and (meta["lstm_layers"], meta["lstm_hidden"]) == (h.shape[0], h.shape[2])


_STANDALONE = textwrap.dedent("""
    import importlib.abc, json, sys

    class NoShoal(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "shoal" or name.startswith("shoal."):
                raise ImportError("shoal must not be needed to run an exported policy")
            return None

    sys.meta_path.insert(0, NoShoal())
    import numpy as np
    obs = np.load(sys.argv[3])
    if sys.argv[1] == "onnx":
        import onnxruntime as ort
        sess = ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
        actions = sess.run(["action"], {"obs": obs})[0]
    else:
        import torch
        actions = torch.jit.load(sys.argv[2])(torch.from_numpy(obs)).numpy()
    assert not any(m == "shoal" or m.startswith("shoal.") for m in sys.modules)
    np.save(sys.argv[4], actions)
""")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_policy_runs_in_a_process_without_shoal(tmp_path, fmt):
    spec = env_spec("Pendulum-v1")
    builder, net = _agent("sac", spec, normalize_obs=True)
    path = export_policy(builder, net, tmp_path / ("p.onnx" if fmt == "onnx" else "p.pt"), fmt)
    obs = _observations(spec, 20)
    np.save(tmp_path / "obs.npy", obs)
    script = tmp_path / "standalone.py"
    script.write_text(_STANDALONE)
    # From an empty folder: the checkout (and its shoal package) is not on the path either.
    proc = subprocess.run([sys.executable, str(script), fmt, str(path), str(tmp_path / "obs.npy"), str(tmp_path / "out.npy")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), _shoal_actions(builder, net, obs), atol=1e-5)


def test_unknown_format_and_unexportable_agents_are_user_errors(tmp_path):
    builder, net = _agent("ppo", env_spec("CartPole-v1"))
    with pytest.raises(ConfigError, match="onnx, torchscript"):
        export_policy(builder, net, tmp_path / "p.tflite", "tflite")
    with pytest.raises(ConfigError, match="cannot be exported"):
        export_policy(builder, torch.nn.Linear(2, 2), tmp_path / "p.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_shoal_export_writes_the_runs_policy(tmp_path):
    from shoal.cli import main
    from shoal.run.reload import load_agent
    from shoal.run.runner import train

    run = train("ppo", "CartPole-v1", steps=256, run_dir=tmp_path / "run", overrides={"eval_episodes": 0, "num_envs": 4,
                                                                                       "rollout_length": 32})
    assert main(["export", str(run.run_dir)]) == 0
    assert main(["export", str(run.run_dir), "--format", "torchscript", "--out", str(tmp_path / "x" / "p.pt")]) == 0
    builder, net, _, steps = load_agent(run.run_dir)
    obs = _observations(builder.env_spec, 50)
    want = _shoal_actions(builder, net, obs)
    np.testing.assert_array_equal(_onnx_actions(run.run_dir / "policy.onnx", obs), want)
    np.testing.assert_array_equal(torch.jit.load(str(tmp_path / "x" / "p.pt"))(torch.from_numpy(obs)).numpy(), want)
    import onnx

    meta = json.loads({p.key: p.value for p in onnx.load(str(run.run_dir / "policy.onnx")).metadata_props}["shoal"])
    assert (meta["algo"], meta["env"], meta["env_steps"]) == ("ppo", "CartPole-v1", steps)

    # Played by onnxruntime, the file scores exactly the episodes `shoal eval` scores.
    from shoal.run.evaluate import evaluate
    from shoal.run.reload import evaluate_run

    sess = ort.InferenceSession(str(run.run_dir / "policy.onnx"), providers=["CPUExecutionProvider"])
    shoal_eval = evaluate_run(run.run_dir, episodes=8)
    onnx_eval = evaluate(lambda o: sess.run(["action"], {"obs": o.astype(np.float32)})[0], "CartPole-v1", 8, shoal_eval["seed"])
    assert onnx_eval["returns"] == shoal_eval["returns"]


def test_shoal_export_of_a_folder_without_a_run_is_a_one_line_error(tmp_path, capsys):
    from shoal.cli import main

    assert main(["export", str(tmp_path / "nowhere")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "has no config.yaml" in err[0]
