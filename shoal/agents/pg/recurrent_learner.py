"""The recurrent actor-critic learner: PPO epochs (or one A2C step) over minibatches of whole sequences.

A ``[T, B]`` rollout is cut into sequences of ``L = sequence_length`` steps (``0``: whole
rollout columns, ``L = T``): sequence ``k * B + b`` is steps ``[k L, (k + 1) L)`` of env copy
``b``, recomputed from the LSTM state the actor carried into its first step
(``extras["lstm_state"][k, b]``) with the episode starts inside it zeroing the state
(``extras["starts"]``). A minibatch is ``minibatch_size / L`` such sequences (``0``: all of
them), drawn without replacement each epoch. GAE, truncation folding and the losses are the
feed-forward learner's, on the values the actor recorded.
"""

from __future__ import annotations

from typing import Any

import torch

from shoal.agents.pg.config import ActorCriticConfig
from shoal.agents.pg.learner import ActorCriticLearner
from shoal.agents.pg.loss import adapt_kl_beta, explained_variance
from shoal.agents.pg.recurrent import RecurrentActorCritic
from shoal.core.schedules import schedule
from shoal.core.types import Rollout
from shoal.errors import ConfigError
from shoal.nets.optim import clip_grad_norm_
from shoal.returns import fold_truncation, gae, vtrace

#: The fields of a sequence batch that are time-major ``[L, N, ...]``.
_SEQUENCE_FIELDS = ("obs", "actions", "old_logp", "old_params", "adv", "returns", "old_values", "starts")


def to_sequences(x: torch.Tensor, L: int) -> torch.Tensor:
    """``x[T, B, ...]`` as ``[L, (T / L) * B, ...]``: column ``k * B + b`` is steps ``[k L, (k + 1) L)`` of copy ``b``."""
    T, B = x.shape[:2]
    K = T // L
    return x.reshape(K, L, B, *x.shape[2:]).transpose(0, 1).reshape(L, K * B, *x.shape[2:])


def from_sequences(x: torch.Tensor, T: int) -> torch.Tensor:
    """The inverse of :func:`to_sequences`: ``[L, K * B, ...]`` back to ``[T, B, ...]``."""
    L, N = x.shape[:2]
    K = T // L
    B = N // K
    return x.reshape(L, K, B, *x.shape[2:]).transpose(0, 1).reshape(T, B, *x.shape[2:])


class RecurrentActorCriticLearner(ActorCriticLearner):
    """PPO (clip or adaptive KL) and A2C with an LSTM policy, trained on stored-state sequences."""

    def __init__(self, net: RecurrentActorCritic, cfg: ActorCriticConfig, total_steps: int, seed: int,
                 device: str = "cpu") -> None:
        if cfg.compile:
            raise ConfigError("compile=true is not supported with recurrent=true (the LSTM's segment loop "
                              "recompiles); set compile=false")
        super().__init__(net, cfg, total_steps, seed, device)  # type: ignore[arg-type]  # same interface, plus state
        self.rnet = net  # the same module as self.net, typed as what it is

    def compute_gradients(self, data: Any) -> tuple[torch.Tensor, dict[str, float]]:
        raise ConfigError("recurrent=true learns on the local topology only; gradients as values (a3c, dppo) "
                          "are not available for it")

    def sequence_batch(self, rollout: Rollout) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
        """``(fields [L, N, ...], start states [N, S], L)`` of a rollout's sequences, without advantages."""
        dev = self.device
        T = rollout.rewards.shape[0]
        L = self.cfg.sequence_length or T
        if T % L:
            raise ConfigError(f"sequence_length={L} must divide the rollout's {T} steps")
        state = rollout.tensor("lstm_state", dev)  # [K, B, S]
        if state.shape[0] != T // L:
            raise ConfigError(f"the rollout holds {state.shape[0]} start states per copy, not {T // L}: its actor "
                              f"used another sequence_length than the learner's {L}")
        seq = {"obs": rollout.tensor("obs", dev), "actions": rollout.tensor("actions", dev),
               "old_logp": rollout.tensor("log_probs", dev), "old_params": rollout.tensor("policy_params", dev),
               "starts": rollout.tensor("starts", dev).bool()}
        return ({k: to_sequences(v, L) for k, v in seq.items()}, state.reshape(-1, state.shape[-1]), L)

    def _forward(self, m: dict[str, torch.Tensor], start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(policy_params [L, M, P], values [L, M])`` of sequences ``m`` from their packed start states."""
        params, v, _ = self.rnet(m["obs"], self.rnet.unpack_state(start), m["starts"])
        return params, v

    @torch.no_grad()
    def evaluate(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The current network's ``(log_probs [T, B], values [T, B], policy_params [T, B, P])`` of a rollout's
        actions, recomputed over its sequences exactly as training does."""
        seq, start, _ = self.sequence_batch(rollout)
        params, v = self._forward(seq, start)
        T = rollout.rewards.shape[0]
        logp = self.net.dist.log_prob(params, seq["actions"])
        return from_sequences(logp, T), from_sequences(v, T), from_sequences(params, T)

    def _train(self, data: Any, apply: bool) -> tuple[torch.Tensor | None, dict[str, float]]:
        if self.collective is not None:
            raise ConfigError("recurrent=true trains with one learner; drop --num-learners or set it to 1")
        rollout = Rollout.concat(data) if isinstance(data, list) else data
        cfg, dev = self.cfg, self.device
        progress = self.env_steps / self.total_steps
        lr = schedule(cfg.lr, 0.0, progress, cfg.lr_schedule)
        clip = schedule(cfg.clip, 0.0, progress, cfg.clip_schedule)
        for g in self.opt.param_groups:
            g["lr"] = lr

        r = {n: rollout.tensor(n, dev) for n in Rollout._SEQ}
        rewards, discounts = fold_truncation(r["rewards"], r["terminated"], r["truncated"], r["final_values"], cfg.gamma)
        values = r["values"]
        bootstrap = rollout.tensor("bootstrap_value", dev)
        if cfg.advantages == "vtrace":
            target_logp = self.evaluate(rollout)[0]
            vt = vtrace(target_logp - r["log_probs"], discounts, rewards, values, bootstrap, cfg.vtrace_clip_rho,
                        cfg.vtrace_clip_c, cfg.vtrace_clip_pg_rho, lambda_=cfg.vtrace_lambda)
            adv, returns = vt.pg_advantages, vt.vs
        else:
            adv = gae(rewards, values, bootstrap, discounts, cfg.gae_lambda)
            returns = adv + values

        seq, start, L = self.sequence_batch(rollout)
        seq.update(adv=to_sequences(adv, L), returns=to_sequences(returns, L), old_values=to_sequences(values, L))
        N = start.shape[0]  # sequences
        mb = N if cfg.minibatch_size == 0 else min(cfg.minibatch_size // L, N)
        names = ("loss_pi", "loss_v", "entropy", "approx_kl", "clip_frac", "grad_norm")
        totals = torch.zeros(len(names), device=dev)
        count = 0
        params_list = list(self.net.parameters())
        zero = torch.zeros((), device=dev)
        inputs = {"rewards": r["rewards"], "obs": r["obs"], "values": r["values"]}  # named if an update fails
        inputs_ok = self.guard.batch_verdict(inputs)  # judged once for all minibatches (no host sync)
        skipped = 0
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731  [L, M, ...] -> [L * M, ...]
        for _ in range(cfg.epochs):
            perm = torch.randperm(N, generator=self.gen).to(dev) if mb < N else None
            for first in range(0, N - mb + 1, mb):
                idx = perm[first:first + mb] if perm is not None else None
                m = {k: (t if idx is None else t[:, idx]) for k, t in seq.items()}
                params, v = self._forward(m, start if idx is None else start[idx])
                mf = {k: flat(t) for k, t in m.items()}
                loss, loss_pi, loss_v, ent, clip_frac, log_ratio = self._loss(mf, flat(params), flat(v), clip)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                if not self.guard.check(loss, self._groups, inputs, batch_ok=inputs_ok):
                    skipped += 1  # parameters and optimiser stay as they were
                    continue
                gn = clip_grad_norm_(params_list, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else zero
                self.opt.step()
                with torch.no_grad():
                    approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean()  # k3 estimator of KL(old || new)
                    totals += torch.stack([loss_pi.detach(), loss_v.detach(), ent.detach(), approx_kl, clip_frac, gn.detach()])
                count += 1

        if skipped:  # the rollout held a NaN or inf: neither beta nor the observation statistics learn from it
            self.env_steps += rewards.numel()
            if count:
                self.version += 1
            out = dict(zip(names, (totals / max(count, 1)).cpu().tolist()))
            out.update(lr=lr, clip=clip, kl_beta=self.beta, **self.guard.metrics())
            return None, out
        if cfg.loss == "kl_penalty":  # beta adapts once per update, from the KL after it
            new_params, old_params = self.evaluate(rollout)[2], rollout.tensor("policy_params", dev)
            kl_after = float(self.net.dist.kl(flat(old_params), flat(new_params)).mean())
            self.beta = adapt_kl_beta(self.beta, kl_after, cfg.kl_target)
        entropy_after = None
        if cfg.ent_coef == 0:  # the loss's entropy was not computed: measure it, before the statistics move
            with torch.no_grad():
                entropy_after = float(self.net.dist.entropy(flat(self._forward(seq, start)[0])).mean())
        # Observation statistics move only after training on this rollout, so actor and learner normalised it alike.
        self.net.obs_norm.update(r["obs"])
        self.version += 1
        self.env_steps += rewards.numel()
        out = dict(zip(names, (totals / max(count, 1)).cpu().tolist()))
        out["explained_variance"] = explained_variance(values.flatten(), returns.flatten())
        if entropy_after is not None:
            out["entropy"] = entropy_after
        out.update(lr=lr, clip=clip, kl_beta=self.beta, policy_lag=float(self.version - 1 - rollout.policy_version),
                   **self.guard.metrics())
        return None, out
