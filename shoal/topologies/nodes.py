"""The nodes topologies place: an actor node (env loop) and a learner node.

Nodes are plain classes built from picklable arguments (algorithm name, config dict,
env id), so any backend can create them in any process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from shoal.agents import registry
from shoal.config import build
from shoal.core import nonfinite
from shoal.core.interfaces import Builder
from shoal.core.memory import retain_freed_memory
from shoal.core.seeding import derive_seed, seeded_global_rngs
from shoal.core.threads import set_threads
from shoal.core.types import ActorReport, EnvSpec
from shoal.envs.watchdog import EnvHung, StepWatchdog
from shoal.io.checkpoint import Detachable

_log = logging.getLogger("shoal")


@dataclass(frozen=True)
class NodeContext:
    """What every node needs to rebuild its algorithm's pieces."""

    algo: str
    agent_config: dict[str, Any]
    env: Any  # env id or factory
    env_spec: EnvSpec
    total_steps: int
    seed: int
    torch_threads: int = 1
    device: str = "cpu"
    vector: str = "auto"
    max_restarts: int = 3
    """Times an actor node's env may raise and be made anew before the node fails (``RunConfig.max_restarts``)."""
    inference_device: str = ""
    """Where batched inference apart from the actors runs (empty: ``device``); see :attr:`inference_on`."""
    env_step_timeout: float = 0.0
    """Seconds an env step may take before the env is abandoned and made anew (0: no limit); ``RunConfig.env_step_timeout``."""
    on_nonfinite: str = "skip"
    """A NaN or inf in an update or from an env: ``skip`` it or ``stop`` the run (``RunConfig.on_nonfinite``)."""

    driver_pid: int = field(default_factory=os.getpid)
    """The process that made this context (the user's driver); nodes elsewhere own their process."""

    def builder(self) -> Builder:
        """The algorithm's builder; its ``make_networks`` always returns the run's initial weights.

        Network initialisation draws from the global generators, so ``make_networks`` runs
        with them seeded from the run seed (every node, in this process or another, starts
        from the same weights) and the caller's generator states restored afterwards.
        """
        set_threads(self.torch_threads)
        spec = registry.get(self.algo)
        cfg = build(spec.config_cls(), self.agent_config)
        builder = spec.builder_cls()(cfg, self.env_spec, total_steps=self.total_steps, seed=self.seed, device=self.device)
        make_networks = builder.make_networks

        def seeded_make_networks() -> nn.Module:
            with seeded_global_rngs(self.seed):
                return make_networks()

        builder.make_networks = seeded_make_networks
        make_learner = builder.make_learner

        def configured_make_learner(*args: Any, **kwargs: Any) -> Any:
            learner = make_learner(*args, **kwargs)
            nonfinite.configure(learner, self.on_nonfinite)  # every learner's NaN guard follows the run's setting
            return learner

        builder.make_learner = configured_make_learner
        return builder

    @property
    def inference_on(self) -> str:
        """The device of a node's batched inference (SEED's server, GA3C's predictor)."""
        return self.inference_device or self.device

    def owns_process(self) -> bool:
        """True in a node process of its own (e.g. a Ray worker), False in the driver that made the context."""
        return os.getpid() != self.driver_pid


class EnvRestarted(Exception):
    """The env raised during a step and was made anew: the caller drops what it held of the
    interrupted episodes (a partial unroll) and starts over from ``env.obs``."""


class RestartingEnv:
    """A node's vector env that is made anew, with a fresh derived seed, when a step or reset fails.

    An env that crashes (a simulator fault, a lost connection) or hangs (a step or reset not done
    within ``env_step_timeout`` seconds) costs its node the episodes in progress, not the run:
    :meth:`step` drops it, makes a new one and raises :class:`EnvRestarted` (:meth:`reset` returns
    the new env's observations); with a deadline, a new env whose first reset fails or hangs counts as one
    more restart. After
    ``max_restarts`` such failures the next one is an :class:`~shoal.errors.EnvError` naming
    the env, the step and the last error.

    A hang is caught by stepping and resetting with a deadline: in Gymnasium's worker processes
    (``vector=async``) the workers of a hung env are terminated; otherwise each step and reset runs in a
    :class:`~shoal.envs.watchdog.StepWatchdog` thread, and a hung env is abandoned with its
    thread (a thread cannot be killed). A NaN or inf observation or reward is, with
    ``on_nonfinite=skip``, a failure like a crash (the env is made anew and counted); with
    ``stop`` it stops the run with an error naming the step. Any other answer the vector env's
    checks refuse (a misshapen observation) is a bug a new env would repeat: it stops the run.
    """

    def __init__(self, ctx: NodeContext, num_envs: int, seed: int, owner: str) -> None:
        self.ctx, self.num_envs_asked, self.seed, self.owner = ctx, num_envs, seed, owner
        self.restarts = 0  # in this process: a node restarted by its backend gets a fresh budget
        self.hangs = 0  # of the restarts, those after a hung step or reset
        self.steps = 0  # vector steps taken in this process, over every env made
        self._reported = 0
        self._watchdog: StepWatchdog | None = None
        self._hung = False  # the current env hung: it is terminated or abandoned, never asked to close
        self.env = self._make(seed)
        if self.ctx.env_step_timeout > 0:  # its first reset, with the deadline a step has
            self._guarded(self._first_reset, seed)

    def _make(self, seed: int) -> Any:
        """A new vector env: reset with ``seed`` here without a deadline, else not yet (:meth:`_first_reset`)."""
        from shoal.envs import make_vec_env

        return make_vec_env(self.ctx.env, self.num_envs_asked, seed=seed, mode=self.ctx.vector,
                            reset=self.ctx.env_step_timeout <= 0)

    def _first_reset(self, seed: int) -> Any:
        """The first reset of an env :meth:`_make` made (with a deadline; a no-op where ``_make`` reset it)."""
        return self._call("reset", seed) if self.ctx.env_step_timeout > 0 else self.env.obs

    @property
    def obs(self) -> np.ndarray:
        return self.env.obs

    @property
    def num_envs(self) -> int:
        return self.env.num_envs

    def step(self, action: np.ndarray) -> Any:
        self.steps += 1
        ok, out = self._guarded(self._call, "step", action)
        if not ok:
            raise EnvRestarted(str(out)) from out
        return out

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """``(True, fn(*args))`` (a step or reset of the env); or, when the env crashed, hung or returned a NaN
        (``on_nonfinite=skip``), ``(False, the error)`` with the env made anew."""
        from shoal.envs.make import NonFiniteEnvOutput
        from shoal.errors import EnvError

        error: Exception
        try:
            return True, fn(*args)
        except NonFiniteEnvOutput as e:
            if self.ctx.on_nonfinite == "stop":
                raise EnvError(f"{self.owner}, step {self.steps}: {e} (on_nonfinite=stop)") from None
            error = e
        except EnvError:  # the env answered, wrongly (a wrong shape): a bug a new env would repeat
            raise
        except Exception as e:  # the env crashed or hung
            error = e
        self.recreate(error)
        return False, error

    def _call(self, what: str, *args: Any) -> Any:
        """The env's ``step`` or ``reset`` (``what``), within ``env_step_timeout`` seconds where there is one."""
        fn = getattr(self.env, what)
        timeout = self.ctx.env_step_timeout
        if timeout <= 0:
            return fn(*args)
        if self.env.in_subprocesses:
            return fn(*args, timeout=timeout)
        if self._watchdog is None:
            self._watchdog = StepWatchdog(f"{self.owner} env step")
        return self._watchdog.call(timeout, fn, *args, what=what)

    def recreate(self, error: BaseException) -> None:
        """Replace the env after ``error`` (or fail once ``max_restarts`` is used up); with a deadline, a new env
        whose first reset fails or hangs is one more restart."""
        from shoal.errors import EnvError

        hung = isinstance(error, EnvHung)
        self._hung = self._hung or hung
        self.restarts += 1
        self.hangs += hung
        name = _env_name(self.ctx.env)
        if self.restarts > self.ctx.max_restarts:
            verb = "hung" if self.hangs == self.restarts else "raised" if not self.hangs else "raised or hung"
            raise EnvError(f"{self.owner}: env {name} {verb} {self.restarts} times (last at step {self.steps}: "
                           f"{type(error).__name__}: {error}); fix the env, or allow more with "
                           f"max_restarts (now {self.ctx.max_restarts})") from error
        _log.warning("%s: env %s %s at step %d: %s: %s; made it anew (%d of %d)", self.owner, name,
                     "hung" if hung else "failed", self.steps, type(error).__name__, error, self.restarts,
                     self.ctx.max_restarts)
        self._drop()
        seed = derive_seed(self.seed, "restart", self.restarts)
        try:
            self.env = self._make(seed)
        except Exception as e:
            raise EnvError(f"{self.owner}: env {name} raised ({type(error).__name__}: {error}) "
                           f"and could not be made anew ({type(e).__name__}: {e}); check the env's setup") from e
        self._guarded(self._first_reset, seed)  # a reset that fails again recreates again, up to max_restarts

    def _drop(self) -> None:
        """Let go of the current env: closed, terminated (hung worker processes) or abandoned (a hung thread)."""
        hung, self._hung = self._hung, False
        if hung:
            if self.env.in_subprocesses:
                self.env.close(terminate=True)
            elif self._watchdog is not None:  # its step still holds the env: closed there if it ever returns
                self._watchdog.close(then=self.env.close)
            self._watchdog = None  # spent: its thread stays with the hung env until its step returns
            return
        try:
            self.env.close()
        except Exception:  # a crashed env may not close cleanly; it is dropped either way
            pass

    def take_restarts(self) -> int:
        """Restarts since the last call (what a node reports per call; the driver adds them up)."""
        new, self._reported = self.restarts - self._reported, self.restarts
        return new

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset the env (within ``env_step_timeout`` like a step): its observations, those of an env made anew
        (itself reset with a seed of its own) if the reset crashed or hung."""
        ok, obs = self._guarded(self._call, "reset", seed)
        return obs if ok else self.env.obs

    def close(self) -> None:
        if self._hung:
            self._drop()
            return
        if self._watchdog is not None:
            self._watchdog.close()
        self.env.close()


def _env_name(env: Any) -> str:
    return env if isinstance(env, str) else getattr(env, "__name__", type(env).__name__)


def _reseed_generators(obj: Any, seed: int, depth: int = 2, seen: set[int] | None = None) -> None:
    """Reseed in place every numpy and torch generator an actor holds (its own, and its policy's or engine's a
    level down); a generator shared by several of them is reseeded once and stays shared."""
    seen = set() if seen is None else seen
    for name, value in list(vars(obj).items()):
        if id(value) in seen:
            continue
        if isinstance(value, np.random.Generator):
            seen.add(id(value))
            value.bit_generator.state = np.random.default_rng(derive_seed(seed, name)).bit_generator.state
        elif isinstance(value, torch.Generator):
            seen.add(id(value))
            value.manual_seed(derive_seed(seed, name))
        elif depth > 1 and hasattr(value, "__dict__") and not isinstance(value, (nn.Module, torch.Tensor, type)):
            _reseed_generators(value, derive_seed(seed, name), depth - 1, seen)


class RewardStatsState:
    """``state``/``load_state`` of an env-stepping node whose only checkpointed state is its reward normaliser
    (``self.reward_norm``, None without ``normalize_reward``): SEED's env workers, GA3C's agents."""

    reward_norm: Any

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of this node: its reward normaliser's statistics (with ``normalize_reward``)."""
        return {"reward_norm": self.reward_norm.state()} if self.reward_norm is not None else {}

    def load_state(self, state: dict[str, Any]) -> None:
        if self.reward_norm is not None and "reward_norm" in state:
            self.reward_norm.load_state(state["reward_norm"])
            self.reward_norm.new_episodes()  # the envs start new episodes after a resume


class ActorNode:
    """Steps a vector env with one actor and reports episodes and the adder's data."""

    def __init__(self, ctx: NodeContext, actor_id: int, num_actors: int, env_seed: int, actor_seed: int) -> None:
        self.builder = ctx.builder()
        self.actor_id = actor_id
        self.env = RestartingEnv(ctx, self.builder.num_envs, env_seed, f"actor {actor_id}")
        self.env_seed = env_seed
        self.version = -1  # the parameter version pulled last (pull)
        self.actor = self.builder.make_actor(self.builder.make_networks(), self.env.num_envs, actor_id, num_actors, actor_seed)
        self.actor.observe_first(self.env.obs)
        spec = ctx.env_spec
        self.low, self.high = (None, None) if spec.discrete else (spec.action_low, spec.action_high)
        self.reward_norm = self.builder.make_reward_normalizer(self.env.num_envs)
        self.resets = 0
        self.restarted = False  # a process the backend made anew, which has not yet taken on its predecessor's state

    def run(self, num_steps: int, variables: tuple[int, dict] | None = None,
            resume: dict[str, Any] | None = None) -> tuple[ActorReport, Any]:
        """Run ``num_steps`` vector steps (after adopting ``variables`` if given).

        Episode returns are the env's own (``VecEnv``'s ``extras["episodes"]``): on Atari the
        game score of whole games, while the learner sees clipped, per-life steps. ``resume``:
        the :meth:`state` a restarted node's dead process last checkpointed (see :meth:`resume`), taken on
        only by a process the backend made anew (after :meth:`on_restart`) and only once.
        """
        if self.restarted:  # a new process's first call: one that lived on keeps its own counters
            self.restarted = False
            if resume is not None:
                self.resume(resume)
        if variables is not None:
            self.actor.load_variables(*variables)
        while True:
            try:
                return self._run(num_steps)
            except EnvRestarted:  # the episodes in progress are lost, the run goes on with a new env
                self._new_episodes(self.env.obs)

    def _run(self, num_steps: int) -> tuple[ActorReport, Any]:
        env, actor = self.env, self.actor
        returns: list[float] = []
        lengths: list[int] = []
        obs = env.obs
        for _ in range(num_steps):
            action = actor.select_action(obs)
            env_action = action if self.low is None else np.clip(action, self.low, self.high)
            step = env.step(env_action)
            ended = step.extras.get("episodes")
            if ended is not None:
                returns.extend(ended.returns.tolist())
                lengths.extend(ended.lengths.tolist())
            if self.reward_norm is not None:
                step.reward = self.reward_norm(step.reward, step.done)
            actor.observe(action, step)
            obs = step.next_obs
        # The node's env restarts so far in this process (topologies with calls of their own report take_restarts).
        report = ActorReport(num_steps * env.num_envs, returns, lengths, data={"env_restarts_total": float(env.restarts)},
                             actor_id=self.actor_id)
        return report, actor.drain()

    def pull(self, variables: Any) -> None:
        """Adopt the newest snapshot of the variable server ``variables`` if it is newer than the one held."""
        from shoal.services.variables import pull_snapshot

        snap = pull_snapshot(variables, self.version)
        if snap is not None:
            self.actor.load_variables(snap.version, snap.tensors())
            self.version = snap.version

    def _new_episodes(self, obs: np.ndarray) -> None:
        """Every env copy starts a new episode at ``obs`` (the actor drops partial data; returns restart at 0)."""
        self.actor.observe_first(obs)
        if self.reward_norm is not None:
            self.reward_norm.new_episodes()

    def on_restart(self) -> None:
        """Called by a backend that restarted this node's process: its envs start from a new seed
        (the constructor ran with the first process's arguments) and it pulls parameters afresh."""
        self.resets += 1
        seed = derive_seed(self.env_seed, "process", os.getpid())
        self.env.seed = seed  # envs made anew in this process draw their seeds from it, not the first process's
        self._new_episodes(self.env.reset(seed=seed))
        _reseed_generators(self.actor, derive_seed(seed, "actor"))  # its exploration: not the first process's draws
        self.restarted = True

    def alive(self) -> bool:
        """Answers at once: the driver's sign that a restarted node's process is up."""
        return True

    def resume(self, state: dict[str, Any]) -> None:
        """A restarted node takes on its dead process's :meth:`state` as of the last checkpoint: the actor's
        counters (so an epsilon or warm-up schedule goes on instead of starting over) and the reward
        normaliser's statistics. Its generators stay this process's (reseeded, not the dead one's draws) and
        its envs keep the episodes they began at the restart."""
        if state.get("actor"):
            # parameters come with the call that resumes (the version held is this process's, none yet)
            self.actor.load_state({**state["actor"], "version": -1} if "version" in state["actor"] else state["actor"])
            _reseed_generators(self.actor, derive_seed(self.env.seed, "actor", "resumed"))
        if self.reward_norm is not None and "reward_norm" in state:
            self.reward_norm.load_state(state["reward_norm"])
            self.reward_norm.new_episodes()

    def state(self) -> dict[str, Any]:
        s: dict[str, Any] = {"actor": self.actor.state()}
        if self.reward_norm is not None:
            s["reward_norm"] = self.reward_norm.state()
        return s

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore actor state; envs restart fresh episodes with a new derived seed."""
        if state.get("actor"):
            self.actor.load_state(state["actor"])
        if self.reward_norm is not None and "reward_norm" in state:
            self.reward_norm.load_state(state["reward_norm"])
        self.resets += 1
        self.actor.observe_first(self.env.reset(seed=self.env_seed + 7919 * self.resets))

    def close(self) -> None:
        self.env.close()


def add_metrics(totals: dict[str, Any], seen: dict[str, int], metrics: Mapping[str, Any]) -> None:
    """Add one update's ``metrics`` to a call's ``totals`` (tensors stay on their device: one sync per call, in
    :func:`mean_metrics`); ``seen`` counts the updates that reported each metric, as a skipped (non-finite) update
    reports only the count of skipped updates so far, which is kept as its newest value, not summed."""
    for k, v in metrics.items():
        if k == nonfinite.SKIPPED_METRIC:
            totals[k], seen[k] = v, 1
        else:
            totals[k] = totals[k] + v if k in totals else v
            seen[k] = seen.get(k, 0) + 1


def mean_metrics(totals: dict[str, Any], seen: dict[str, int]) -> dict[str, float]:
    """Each metric of :func:`add_metrics` averaged over the updates that reported it."""
    return {k: float(v) / seen[k] for k, v in totals.items()}


class LearnerNode:
    """Holds the learner and its tables; routes actor data into them and runs updates."""

    def __init__(self, ctx: NodeContext) -> None:
        if ctx.owns_process():
            retain_freed_memory()  # a learner process of its own: keep freed activation blocks (see there)
        self.builder = ctx.builder()
        self.networks = self.builder.make_networks()
        self.tables = self.builder.make_tables()
        self.learner = self.builder.make_learner(self.networks, self.tables)
        self.learner_steps = 0

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        return self.learner.get_variables()

    def learn(self, env_steps: int, *data: Any) -> dict[str, float]:
        """Feed the actors' data in and run the learner steps now due; returns mean metrics."""
        if self.tables:
            for items in data:
                if items is None:
                    continue
                priorities = items.pop("priority", None) if isinstance(items, dict) else None
                next(iter(self.tables.values())).insert(items, priorities)
            payload = None
        else:
            payload = [d for d in data if d is not None]
        due = self.builder.learner_steps_due(env_steps, self.learner_steps)
        if self.tables and not next(iter(self.tables.values())).can_sample(max(1, self.builder.replay_batch_size)):
            due = 0  # a replay restored empty (a resume without it) refills before the learner samples again
        totals: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for _ in range(due):
            add_metrics(totals, seen, self.learner.step(payload))
            self.learner_steps += 1
        return mean_metrics(totals, seen)

    def state(self) -> dict[str, Any]:
        s: dict[str, Any] = {"learner": self.learner.state(), "learner_steps": self.learner_steps}
        if self.tables and self.builder.checkpoint_replay:
            # Detachable: the runner keeps the replay only with the newest checkpoint.
            s["tables"] = Detachable({k: t.state() for k, t in self.tables.items()})
        return s

    def load_state(self, state: dict[str, Any]) -> None:
        self.learner.load_state(state["learner"])
        self.learner_steps = int(state["learner_steps"])
        for k, t in self.tables.items():
            if "tables" in state and k in state["tables"]:
                t.load_state(state["tables"][k])
