"""The shared machinery of shoal's numpy-batched envs: seeding, time limit, same-step autoreset.

A subclass holds the physical state of all copies as numpy arrays and implements
three vectorised pieces: ``_advance`` (one physics step of every copy),
``_reset_rows`` (new initial states for some copies, from raw uniform draws) and
``_observe`` (observations of some or all copies). This class does the rest.

Seeding matches ``gymnasium.vector.SyncVectorEnv``: copy ``i`` owns one
``np.random.Generator`` created like ``gym.make(id).reset(seed=seed + i)`` creates
its ``np_random``, and that generator is read only when the copy resets. Every
classic-control reset draws a fixed number of ``Generator.uniform`` values, and
``Generator.uniform(low, high)`` is ``low + (high - low) * Generator.random()``
value for value, so the raw ``random()`` stream is read ahead in blocks per copy
(one generator call per many resets) and the affine map is applied vectorised
over all copies that reset at a step. The values a copy sees are exactly those
its Gymnasium twin would draw.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from shoal.errors import EnvError

# About how many raw uniforms each copy reads ahead from its generator at once
# (rounded down to whole resets): one generator call per 16 CartPole resets.
_BLOCK = 64


class BatchedVectorEnv(VectorEnv):
    """A numpy-vectorised classic-control env: ``num_envs`` copies stepped in one call.

    Same-step autoreset: a copy that ends at a step returns the first observation
    of its next episode; the last observation of the ended episode is in
    ``infos["final_obs"]`` (a dense float32 ``[N, *obs_shape]`` array, valid where
    the bool mask ``infos["_final_obs"]`` is True; other rows hold the copies'
    current observations). Both keys are present at every step.
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    #: The Gymnasium id whose dynamics (and time limit) this class reproduces.
    gym_id: ClassVar[str]
    #: Gymnasium's ``max_episode_steps`` for ``gym_id``.
    default_max_episode_steps: ClassVar[int]
    #: How many ``Generator.uniform`` values one reset of one copy draws.
    draws_per_reset: ClassVar[int]

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if int(num_envs) < 1:
            raise EnvError(f"num_envs must be >= 1, got {num_envs}")
        if render_mode is not None:
            raise EnvError(
                f"{type(self).__name__} does not render (render_mode={render_mode!r}); "
                f"use gym.make({self.gym_id!r}, render_mode=...) to watch an episode"
            )
        limit = self.default_max_episode_steps if max_episode_steps is None else int(max_episode_steps)
        if limit < 1:
            raise EnvError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.num_envs = int(num_envs)
        self.max_episode_steps = limit
        self.render_mode = None
        self.single_observation_space, self.single_action_space = self._make_spaces()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        n = self.num_envs
        self._elapsed = np.zeros(n, dtype=np.int64)
        self._rngs: list[np.random.Generator | None] = [None] * n
        # Raw uniforms read ahead per copy: _ubuf[i, k] holds the draws of copy i's k-th next reset.
        self._resets_per_block = max(1, _BLOCK // self.draws_per_reset)
        self._ubuf = np.empty((n, self._resets_per_block, self.draws_per_reset), dtype=np.float64)
        self._upos = np.full(n, self._resets_per_block, dtype=np.int64)  # == block size: refill first
        self._has_reset = False
        if seed is not None:
            self._seed_rows(np.arange(n), [int(seed) + i for i in range(n)])

    # -- to implement -----------------------------------------------------------------

    def _make_spaces(self) -> tuple[spaces.Space, spaces.Space]:
        """The single-copy observation and action spaces, as Gymnasium defines them."""
        raise NotImplementedError

    def _reset_rows(self, rows: np.ndarray, u: np.ndarray, options: dict[str, Any] | None) -> None:
        """Set the initial state of copies ``rows`` from raw draws ``u`` in [0, 1), shape [len(rows), draws]."""
        raise NotImplementedError

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step every copy once; return (reward float64 [N], terminated bool [N])."""
        raise NotImplementedError

    def _observe(self, rows: np.ndarray | None) -> np.ndarray:
        """A new float32 array of the current observations of copies ``rows`` (all when None)."""
        raise NotImplementedError

    # -- VectorEnv API ------------------------------------------------------------------

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all copies (or those in ``options["reset_mask"]``); ``seed`` int gives copy i ``seed + i``."""
        n = self.num_envs
        if seed is None or isinstance(seed, (int, np.integer)):
            super().reset(seed=None if seed is None else int(seed))
        seeds = self._per_copy_seeds(seed)
        options = dict(options) if options else {}
        mask = options.pop("reset_mask", None)
        if mask is None:
            rows = np.arange(n)
        else:
            mask = np.asarray(mask)
            if mask.shape != (n,) or mask.dtype != np.bool_ or not mask.any():
                raise EnvError(
                    f"options['reset_mask'] must be a bool array of shape ({n},) with a True value, "
                    f"got dtype {mask.dtype} shape {mask.shape}"
                )
            rows = np.flatnonzero(mask)
        reseed = [i for i in rows if seeds[i] is not None or self._rngs[i] is None]
        if reseed:
            self._seed_rows(np.asarray(reseed), [seeds[i] for i in reseed])
        self._reset_rows(rows, self._draw(rows), options or None)
        self._elapsed[rows] = 0
        self._has_reset = True
        return self._observe(None), {}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step all copies; copies that end are reset at once (same-step autoreset)."""
        if not self._has_reset:
            raise EnvError(f"{type(self).__name__}.step() was called before reset(); call reset() first")
        reward, terminated = self._advance(np.asarray(actions))
        elapsed = self._elapsed
        elapsed += 1
        truncated = elapsed >= self.max_episode_steps
        done = terminated | truncated
        obs = self._observe(None)
        final_obs = obs
        if done.any():
            rows = np.flatnonzero(done)
            obs = obs.copy()
            self._reset_rows(rows, self._draw(rows), None)
            elapsed[rows] = 0
            obs[rows] = self._observe(rows)
        return obs, reward, terminated, truncated, {"final_obs": final_obs, "_final_obs": done}

    def close_extras(self, **kwargs: Any) -> None:
        """Nothing to release: all state is numpy arrays."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.gym_id}, num_envs={self.num_envs})"

    # -- helpers for subclasses -----------------------------------------------------------

    def _check_actions(self, actions: np.ndarray, shape: tuple[int, ...], integer: bool = False) -> None:
        """Raise a one-line error unless ``actions`` has the batched ``shape`` (and an integer dtype)."""
        if actions.shape != shape:
            raise EnvError(
                f"{type(self).__name__} expects actions of shape {shape}, got {actions.shape}; "
                f"pass one action per copy (num_envs={self.num_envs})"
            )
        if integer and actions.dtype.kind not in "iub":
            raise EnvError(
                f"{type(self).__name__} takes integer actions, got dtype {actions.dtype}; "
                "cast them, e.g. actions.astype(np.int64)"
            )

    # -- seeding and draws --------------------------------------------------------------

    def _per_copy_seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        n = self.num_envs
        if seed is None:
            return [None] * n
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + i for i in range(n)]
        seeds = list(seed)
        if len(seeds) != n:
            raise EnvError(f"reset got {len(seeds)} seeds for num_envs={n}; pass one int or one seed per copy")
        return [None if s is None else int(s) for s in seeds]

    def _seed_rows(self, rows: np.ndarray, seeds: Sequence[int | None]) -> None:
        """Give copies ``rows`` fresh generators, as ``Env.reset(seed=...)`` does."""
        for i, s in zip(rows, seeds):
            self._rngs[i] = seeding.np_random(s)[0]
        self._upos[rows] = self._resets_per_block

    def _draw(self, rows: np.ndarray) -> np.ndarray:
        """The next ``draws_per_reset`` raw uniforms of each copy in ``rows``: [len(rows), draws]."""
        pos = self._upos[rows]
        used_up = pos >= self._resets_per_block
        if used_up.any():  # rare: one generator call per block of resets
            for j in np.flatnonzero(used_up):
                i = rows[j]
                rng = self._rngs[i]
                if rng is None:  # never seeded: Gymnasium seeds from OS entropy
                    rng = self._rngs[i] = seeding.np_random(None)[0]
                rng.random(out=self._ubuf[i])
                pos[j] = 0
        u = self._ubuf[rows, pos]
        self._upos[rows] = pos + 1
        return u

    @staticmethod
    def _bounds(options: dict[str, Any] | None, low: float, high: float) -> tuple[float, float]:
        """The ``low``/``high`` reset bounds Gymnasium's classic-control envs accept in ``options``."""
        if not options:
            return low, high
        try:
            lo, hi = float(options.get("low", low)), float(options.get("high", high))
        except (TypeError, ValueError):
            raise EnvError(f"reset options low/high must be numbers, got {options!r}") from None
        if lo > hi:
            raise EnvError(f"reset option low ({lo}) must not exceed high ({hi})")
        return lo, hi
