"""Exporting a run's policy as one standalone file: ONNX (onnxruntime) or TorchScript (``torch.jit.load``).

The file holds the greedy policy of :func:`shoal.agents.greedy.greedy_module`, observation
normalisation included, and needs neither shoal nor the training code to run:

- feed-forward policies: input ``obs [B, *obs_shape]``, output ``action [B]`` (int64, discrete)
  or ``[B, act_dim]`` (float32, in the env's bounds);
- recurrent policies: inputs ``obs``, ``h``, ``c`` (``[lstm_layers, B, lstm_hidden]`` float32,
  zeros at the start) and ``episode_start [B]`` (bool), outputs ``action``, ``h``, ``c``.

Only what the policy computes is in the file: critics and target networks are left out.
Observations are float32, uint8 for image envs (Atari frames as the env returns them) or
int64 for Discrete observation spaces. What the inputs are, and the run's algorithm, env and
action bounds, travel in the file: ONNX ``metadata_props`` key ``shoal``, TorchScript extra
file ``shoal.json``, both the same JSON.

ONNX files are written by PyTorch's TorchScript-based exporter (``dynamo=False``), which needs
only ``onnx`` (the newer exporter would also need ``onnxscript``).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shoal.agents.greedy import GreedyRecurrent, greedy_module
from shoal.errors import ConfigError
from shoal.io.modes import make_default_mode

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
ONNX_OPSET = 17


def _obs_example(spec: Any, batch: int) -> torch.Tensor:
    """A batch of observations of the dtype the exported policy takes."""
    if spec.num_obs_states is not None:
        return torch.zeros((batch, *spec.obs_shape), dtype=torch.int64)
    dtype = torch.uint8 if np.dtype(spec.obs_dtype) == np.uint8 else torch.float32
    return torch.zeros((batch, *spec.obs_shape), dtype=dtype)


def policy_signature(builder: Any, module: nn.Module, batch: int = 2) -> tuple[tuple[torch.Tensor, ...], list[str], list[str]]:
    """``(example inputs, input names, output names)`` of the exported policy."""
    obs = _obs_example(builder.env_spec, batch)
    if isinstance(module, GreedyRecurrent):
        h, c = module.initial_state(batch)
        return (obs, h, c, torch.ones(batch, dtype=torch.bool)), ["obs", "h", "c", "episode_start"], ["action", "h_out", "c_out"]
    return (obs,), ["obs"], ["action"]


def policy_metadata(builder: Any, module: nn.Module, names: list[list[str]], extra: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """What a user of the file needs to feed it: inputs, outputs, the action space and the run it came from."""
    spec = builder.env_spec
    obs = _obs_example(spec, 1)
    meta: dict[str, Any] = {
        "format_version": 1, "inputs": names[0], "outputs": names[1],
        "obs_shape": list(spec.obs_shape), "obs_dtype": str(obs.dtype).removeprefix("torch."),
        "discrete": bool(spec.discrete), "num_actions": int(spec.num_actions),
        "action_low": None if spec.discrete else np.asarray(spec.action_low, np.float64).tolist(),
        "action_high": None if spec.discrete else np.asarray(spec.action_high, np.float64).tolist(),
        "recurrent": isinstance(module, GreedyRecurrent),
    }
    if isinstance(module, GreedyRecurrent):
        h, _ = module.initial_state(1)
        meta["lstm_layers"], meta["lstm_hidden"] = int(h.shape[0]), int(h.shape[2])
    meta.update(extra or {})
    return meta


def export_policy(builder: Any, networks: nn.Module, path: str | Path, fmt: str = "onnx",
                  metadata: dict[str, Any] | None = None) -> Path:
    """Write the greedy policy of ``builder``'s agent over ``networks`` to ``path`` (atomically) and return it."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = greedy_module(builder, copy.deepcopy(networks).cpu())
    module.requires_grad_(False)  # a traced module's outputs then need no torch.no_grad() to be read
    args, inputs, outputs = policy_signature(builder, module)
    meta = policy_metadata(builder, module, [inputs, outputs], metadata)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The LSTM torso's segment loop is traced for one timestep, which is all an exported step runs.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based ONNX exporter
            # h and c are inputs, so other batch sizes run (tested); the exporter warns regardless.
            warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
            if fmt == "onnx":
                _export_onnx(module, args, inputs, outputs, tmp, meta)
            else:
                # Frozen: the weights the policy uses become constants, and the rest (critics, target
                # networks) is left out of the file, as the ONNX exporter leaves it out.
                traced = torch.jit.freeze(torch.jit.trace(module, args))
                torch.jit.save(traced, str(tmp), _extra_files={"shoal.json": json.dumps(meta)})
        make_default_mode(tmp)  # mkstemp's files are 0600; give the mode open() would
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _export_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str], path: Path,
                 meta: dict[str, Any]) -> None:
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package; install it with: pip install 'shoal[export]'") from None
    axes: dict[str, dict[int, str]] = {n: {0: "batch"} for n in ("obs", "episode_start", "action")}
    axes.update({n: {1: "batch"} for n in ("h", "c", "h_out", "c_out")})
    torch.onnx.export(module, args, str(path), dynamo=False, input_names=inputs, output_names=outputs,
                      dynamic_axes={n: a for n, a in axes.items() if n in inputs + outputs}, opset_version=ONNX_OPSET)
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "shoal", json.dumps(meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_run(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None) -> Path:
    """Export the greedy policy of a run's last checkpoint; ``out`` defaults to ``RUN_DIR/policy.onnx`` (``.pt``)."""
    from shoal.run.alphazero import is_game_run
    from shoal.run.reload import load_agent

    run_dir = Path(run_dir)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if is_game_run(run_dir):
        raise ConfigError(f"{run_dir} is a board-game run, whose player is a search, not a network policy; "
                          "export a Gymnasium run")
    builder, networks, cfg, steps = load_agent(run_dir)
    path = Path(out) if out is not None else run_dir / f"policy{FORMATS[fmt]}"
    return export_policy(builder, networks, path, fmt, {"algo": cfg["algo"], "env": cfg["env"], "env_steps": steps})
