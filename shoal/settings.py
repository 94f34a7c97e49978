"""Run-level settings shared by every algorithm (how long, where, how often to log)."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.config import positive, require


@dataclass
class RunConfig:
    """Settings of a training run, apart from the algorithm's hyperparameters."""

    steps: int = 100_000
    """Total environment steps to train for."""
    seed: int = 0
    """Run seed; every env, actor and evaluation seed is derived from it."""
    backend: str = "inprocess"
    """Where nodes run: inprocess (default, no Ray) or ray."""
    topology: str = ""
    """Topology (empty: the algorithm's default, e.g. local)."""
    num_actors: int = 1
    """Number of actor nodes stepping envs."""
    num_learners: int = 1
    """Learner processes averaging their gradients every step (all-reduce); each computes on batch/num_learners."""
    ray_address: str = ""
    """Address of an existing Ray cluster (empty: start a private local instance)."""
    vector: str = "auto"
    """Vector env kind: auto, sync, async, batched, envpool."""
    eval_episodes: int = 20
    """Episodes in the final evaluation (deterministic actions)."""
    eval_every: int = 0
    """Env steps between evaluations during training (0: only the final one)."""
    target_return: float | None = None
    """Stop as soon as an evaluation's mean return reaches this (needs eval_every > 0)."""
    eval_max_steps: int = 10_000
    """Cut evaluation episodes after this many steps (for envs without a time limit)."""
    eval_env: str = ""
    """Env id for evaluation (empty: the training env; batched ids map to Gymnasium's)."""
    checkpoint_every: int = 0
    """Env steps between checkpoints (0: about 10 per run); one is always written at the end."""
    log_every: int = 0
    """Env steps between metric rows (0: about 200 rows per run, at most one per iteration)."""
    keep_checkpoints: int = 3
    """How many recent checkpoints to keep (only the newest keeps the replay tables)."""
    on_checkpoint_error: str = "stop"
    """When a checkpoint cannot be written (disk full, permissions): ``stop`` the run with an error, or
    ``continue`` training with a warning and try again at the next checkpoint; either way the previous
    checkpoint stays intact."""
    capture_video: bool = False
    """Record evaluation episodes (greedy policy) as mp4 into the run's ``videos/`` (and TensorBoard, W&B)."""
    video_every: int = 0
    """With capture_video: env steps between videos of one evaluation episode (0: only the final policy's)."""
    video_max_frames: int = 1000
    """Frames at most per video (one per agent step, plus one per reset)."""
    track: str = ""
    """Experiment tracker receiving the metrics, config and videos besides TensorBoard: empty (none) or wandb."""
    wandb_project: str = "shoal"
    """Weights & Biases project of the run (with track=wandb)."""
    wandb_entity: str = ""
    """Weights & Biases entity (user or team; empty: the account's default)."""
    torch_threads: int = 1
    """Intra-op threads per process (1 is fastest for small nets on few cores)."""
    max_restarts: int = 3
    """Failures an actor node survives before the run stops with an error: deaths of its process (on Ray
    it is restarted and pulls the newest parameters), and within each process, env crashes (the env is
    made anew inside the node)."""
    env_step_timeout: float = 0.0
    """Seconds an env step may take before the env counts as hung: it is abandoned (its worker processes
    terminated with vector=async) and made anew inside its node, like an env that raised (within
    max_restarts). 0 (default): no limit. In-process envs then step in a thread of their own, which costs
    a thread switch per step; set it well above the slowest normal step."""
    on_nonfinite: str = "skip"
    """A NaN or inf in a loss, gradient, reward or observation: ``skip`` (the learner skips that update and
    counts it as nonfinite_updates; an env that returned it is made anew and counted in env_restarts,
    within max_restarts) or ``stop`` the run with an error naming the step and the source."""
    inference_device: str = ""
    """Device of batched inference held apart from the actors (SEED's inference server, GA3C's predictor):
    cpu, cuda or auto like ``device``; empty: the learner's device. Actors always act on the CPU."""
    device: str = "cpu"
    """Learner device: cpu, cuda, cuda:N (in-process only) or auto (cuda if the learner's host, or the Ray cluster, has a GPU)."""

    def __post_init__(self) -> None:
        positive(self, "steps", "num_actors", "num_learners", "torch_threads")
        require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        require(self.backend in ("inprocess", "threaded", "ray"),
                f"backend must be inprocess, threaded or ray, got {self.backend!r}")
        require(self.vector in ("auto", "sync", "async", "batched", "envpool"),
                f"vector must be one of auto, sync, async, batched, envpool; got {self.vector!r}")
        require(self.eval_episodes >= 0, f"eval_episodes must be >= 0, got {self.eval_episodes}")
        require(self.eval_max_steps > 0, f"eval_max_steps must be > 0, got {self.eval_max_steps}")
        require(self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}")
        require(self.target_return is None or self.eval_every > 0,
                "target_return needs periodic evaluation; set eval_every too, e.g. eval_every=2048")
        require(self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        require(self.log_every >= 0, f"log_every must be >= 0, got {self.log_every}")
        require(self.max_restarts >= 0, f"max_restarts must be >= 0, got {self.max_restarts}")
        require(self.env_step_timeout >= 0, f"env_step_timeout must be >= 0 seconds (0: no limit), got {self.env_step_timeout}")
        require(self.on_nonfinite in ("skip", "stop"), f"on_nonfinite must be skip or stop, got {self.on_nonfinite!r}")
        require(self.on_checkpoint_error in ("stop", "continue"),
                f"on_checkpoint_error must be stop or continue, got {self.on_checkpoint_error!r}")
        require(self.video_every >= 0, f"video_every must be >= 0, got {self.video_every}")
        require(self.video_every == 0 or self.capture_video,
                f"video_every={self.video_every} records videos only with capture_video=true; add capture_video=true "
                "or drop video_every")
        require(self.video_max_frames >= 1, f"video_max_frames must be >= 1, got {self.video_max_frames}")
        require(self.track in ("", "wandb"), f"track must be empty or wandb, got {self.track!r}")
        require(self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        require(self.inference_device in ("", "auto", "cpu") or self.inference_device.startswith("cuda"),
                f"inference_device must be empty, cpu, cuda, cuda:N or auto; got {self.inference_device!r}")
        require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
                f"device must be cpu, cuda, cuda:N or auto; got {self.device!r}")
