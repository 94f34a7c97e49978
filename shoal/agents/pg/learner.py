"""The actor-critic learner: GAE, then PPO epochs over minibatches or one A2C step."""

from __future__ import annotations

from typing import Any

import torch

from shoal.agents.pg.config import ActorCriticConfig
from shoal.agents.pg.loss import adapt_kl_beta, explained_variance, policy_gradient_loss, ppo_clip_loss, ppo_kl_penalty_loss, value_loss
from shoal.agents.pg.networks import ActorCritic
from shoal.core.distributed import Collective
from shoal.core.interfaces import Learner
from shoal.core.nonfinite import NonFiniteGuard, parameter_groups
from shoal.core.schedules import schedule
from shoal.core.types import Rollout
from shoal.errors import ConfigError
from shoal.nets.flat import flat_grad, set_flat_grad
from shoal.nets.optim import clip_grad_norm_, load_optimizer_state, make_optimizer, optimizer_state
from shoal.returns import fold_truncation, gae, vtrace


class ActorCriticLearner(Learner):
    """PPO (clip or adaptive KL) and A2C, selected by ``config.loss``."""

    def __init__(self, net: ActorCritic, cfg: ActorCriticConfig, total_steps: int, seed: int, device: str = "cpu") -> None:
        self.net = net.to(device)
        self.cfg = cfg
        self.device = torch.device(device)
        self.total_steps = max(1, total_steps)
        self.opt = make_optimizer(cfg.optimizer, self.net.parameters(), cfg.lr, cfg.optimizer_eps)
        self.gen = torch.Generator().manual_seed(seed)
        # torch.compile pays only on long runs: compiling even a small MLP takes many seconds.
        self.forward = torch.compile(self.net) if cfg.compile else self.net
        self.version = 0
        self.env_steps = 0
        self.beta = cfg.kl_beta
        self.collective: Collective | None = None
        """The learner group this learner is one rank of (None: it learns alone); its data is then its shard."""
        self.guard = NonFiniteGuard()
        """Skips (or stops on) an update with a NaN or inf in its inputs, loss or gradients."""
        self._groups = parameter_groups(self.net)

    def get_variables(self) -> tuple[int, dict[str, torch.Tensor]]:
        # Copies: the caller may hold these while the learner keeps updating in place.
        return self.version, {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}

    def step(self, data: Any = None) -> dict[str, float]:
        return self._train(data, apply=True)[1]

    def compute_gradients(self, data: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The gradient of the loss on ``data`` as one flat CPU vector, not applied (A3C's workers).

        Needs one full-batch pass (``epochs=1``, ``minibatch_size=0``): a gradient computed
        elsewhere is one update. Parameters, optimiser and counters are left unchanged.
        """
        cfg = self.cfg
        if not cfg.one_gradient_per_update:
            raise ConfigError("gradients as values need epochs=1, minibatch_size=0 and normalize_obs=false "
                              f"(got epochs={cfg.epochs}, minibatch_size={cfg.minibatch_size}, "
                              f"normalize_obs={cfg.normalize_obs}); set them so one gradient is one update")
        grad, metrics = self._train(data, apply=False)
        assert grad is not None
        return grad, metrics

    def apply_gradients(self, grad: torch.Tensor, env_steps: int = 0) -> dict[str, float]:
        """Apply a flat gradient computed elsewhere (clipped by ``max_grad_norm``); one new version."""
        cfg = self.cfg
        progress = self.env_steps / self.total_steps
        for g in self.opt.param_groups:
            g["lr"] = schedule(cfg.lr, 0.0, progress, cfg.lr_schedule)
        params = list(self.net.parameters())
        self.env_steps += int(env_steps)
        if not self.guard.check_flat(grad):  # parameters, optimiser and version stay as they were
            return self.guard.metrics()
        set_flat_grad(params, grad.to(self.device))
        gn = clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else flat_grad(params).norm()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.version += 1
        return {"grad_norm": float(gn), **self.guard.metrics()}

    def _train(self, data: Any, apply: bool) -> tuple[torch.Tensor | None, dict[str, float]]:
        rollout = Rollout.concat(data) if isinstance(data, list) else data
        cfg, dev = self.cfg, self.device
        progress = self.env_steps / self.total_steps
        lr = schedule(cfg.lr, 0.0, progress, cfg.lr_schedule)
        clip = schedule(cfg.clip, 0.0, progress, cfg.clip_schedule)
        for g in self.opt.param_groups:
            g["lr"] = lr

        rollout.fill_values(self.net.value, dev)
        r = {n: rollout.tensor(n, dev) for n in Rollout._SEQ}
        rewards, discounts = fold_truncation(r["rewards"], r["terminated"], r["truncated"], r["final_values"], cfg.gamma)
        values = r["values"]
        bootstrap = rollout.tensor("bootstrap_value", dev)
        if cfg.advantages == "vtrace":
            adv, returns = self._vtrace(r, rewards, discounts, values, bootstrap)
        else:
            adv = gae(rewards, values, bootstrap, discounts, cfg.gae_lambda)
            returns = adv + values

        n = rewards.numel()
        flat = lambda x: x.reshape(n, *x.shape[2:])  # noqa: E731
        obs, actions, old_logp = flat(r["obs"]), flat(r["actions"]), flat(r["log_probs"])
        old_params = flat(rollout.tensor("policy_params", dev))
        adv, returns, old_values = flat(adv), flat(returns), flat(values)
        # In a learner group every rank holds whole env columns of one [T, L*B] batch. All ranks draw the
        # same permutation of that whole batch (their generators agree) and each takes the members of
        # global minibatch k that are its own, weighting its loss by its share, so the averaged gradient
        # is that of one learner's k-th minibatch of the whole batch.
        world = 1 if self.collective is None else self.collective.world_size
        rank = 0 if self.collective is None else self.collective.rank
        B = rewards.shape[1]
        N = n * world
        mb = N if cfg.minibatch_size == 0 else min(cfg.minibatch_size * world, N)

        # Per-step metrics stay tensors (no host sync inside the loop); averaged once at the end.
        names = ("loss_pi", "loss_v", "entropy", "approx_kl", "clip_frac", "grad_norm")
        totals = torch.zeros(len(names), device=dev)
        count = 0
        dist = self.net.dist
        params_list = list(self.net.parameters())
        zero = torch.zeros((), device=dev)
        batch = {"obs": obs, "actions": actions, "old_logp": old_logp, "old_params": old_params, "adv": adv,
                 "returns": returns, "old_values": old_values}
        inputs = {"rewards": r["rewards"], "obs": r["obs"], "values": r["values"]}  # named if an update fails
        inputs_ok = self.guard.batch_verdict(inputs)  # judged once for all minibatches (no host sync)
        skipped = 0
        for _ in range(cfg.epochs):
            mine = local = None
            if mb < N:
                perm = torch.randperm(N, generator=self.gen).to(dev)  # CPU generator: same order on any device
                if world == 1:
                    # One gather per epoch, then minibatches are contiguous views (no per-minibatch copies).
                    shuffled = {k: t[perm] for k, t in batch.items()}
                else:  # flat index t * (L*B) + column of the whole batch -> this rank's t * B + column - rank * B
                    col = perm % (world * B)
                    mine = col // B == rank
                    local = (perm // (world * B)) * B + col - rank * B
            else:
                shuffled = batch  # a full-batch step: order does not matter
            for start in range(0, N - mb + 1, mb):
                if mine is not None and local is not None:
                    idx = local[start:start + mb][mine[start:start + mb]]
                    m = {k: t[idx] for k, t in batch.items()}
                else:
                    m = {k: t[start:start + mb] for k, t in shuffled.items()}
                share = len(m["obs"]) * world / mb  # this rank's part of the group's minibatch, times L
                if share == 0:  # none of this minibatch is this rank's: it adds a zero gradient
                    assert self.collective is not None
                    self.opt.zero_grad(set_to_none=True)
                    if cfg.normalize_advantages:
                        self.collective.standardize(m["adv"])  # every rank takes part in every collective
                    self.collective.average_gradients(params_list)
                    if not self.guard.check(zero, self._groups, inputs, self.collective, inputs_ok):  # as every rank decides
                        skipped += 1
                        continue
                    if cfg.max_grad_norm > 0:
                        clip_grad_norm_(params_list, cfg.max_grad_norm)
                    self.opt.step()
                    continue
                params, v = self.forward(m["obs"])
                loss, loss_pi, loss_v, ent, clip_frac, log_ratio = self._loss(m, params, v, clip)
                if world > 1:
                    loss = loss * share  # the mean over the group's minibatch, once averaged over the ranks
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                if apply and self.collective is not None:
                    self.collective.average_gradients(params_list)  # every rank steps with the whole minibatch's gradient
                if apply and not self.guard.check(loss, self._groups, inputs, self.collective, inputs_ok):
                    skipped += 1  # every rank skips this minibatch: parameters and optimiser stay as they were
                    continue
                if apply:
                    gn = clip_grad_norm_(params_list, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else zero
                    self.opt.step()
                else:  # gradients as values: hand the raw gradient out, leave the parameters alone
                    grad = flat_grad(params_list).cpu()
                    self.opt.zero_grad(set_to_none=True)
                    gn = grad.norm().to(dev)
                with torch.no_grad():
                    # k3 estimator of KL(old || new): cheap and unbiased
                    approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean()
                    totals += torch.stack([loss_pi.detach(), loss_v.detach(), ent.detach(), approx_kl, clip_frac, gn.detach()])
                count += 1

        if not apply:
            out = dict(zip(names, (totals / max(count, 1)).cpu().tolist()))
            out["explained_variance"] = explained_variance(old_values, returns)
            return grad, out
        if skipped:  # the rollout held a NaN or inf: neither beta nor the observation statistics learn from it
            out = dict(zip(names, (totals / max(count, 1)).cpu().tolist()))
            self.env_steps += n * (1 if self.collective is None else self.collective.world_size)
            if count:
                self.version += 1
            out.update(lr=lr, clip=clip, kl_beta=self.beta, **self.guard.metrics())
            return None, out
        if cfg.loss == "kl_penalty":
            # The paper adapts beta once per policy update, from the KL after the update.
            with torch.no_grad():
                params, _ = self.net(obs)
                kl = dist.kl(old_params, params).mean()
                kl_after = float(kl if self.collective is None else self.collective.mean(kl))
            self.beta = adapt_kl_beta(self.beta, kl_after, cfg.kl_target)
        # Observation statistics move only after training on this rollout, so the
        # actor and the learner normalised it identically.
        ranks = 1 if self.collective is None else self.collective.world_size
        if self.collective is not None and self.net.obs_norm.enabled:
            self.net.obs_norm.update(self.collective.gather(r["obs"], 1))  # every rank's shard: the whole batch
        else:
            self.net.obs_norm.update(r["obs"])
        self.version += 1
        self.env_steps += n * ranks
        out = dict(zip(names, (totals / max(count, 1)).cpu().tolist()))
        with torch.no_grad():
            out["explained_variance"] = explained_variance(old_values, returns)
            if cfg.ent_coef == 0:
                params, _ = self.net(obs)
                out["entropy"] = float(dist.entropy(params).mean())
        out.update(lr=lr, clip=clip, kl_beta=self.beta, policy_lag=float(self.version - 1 - rollout.policy_version),
                   **self.guard.metrics())
        return None, out

    def _loss(self, m: dict[str, torch.Tensor], params: torch.Tensor, v: torch.Tensor, clip: float
              ) -> tuple[torch.Tensor, ...]:
        """``(loss, loss_pi, loss_v, entropy, clip_frac, log_ratio)`` of minibatch ``m`` (flat samples), given the
        network's ``params`` and values ``v`` on it (advantages standardised here when configured)."""
        cfg, dist = self.cfg, self.net.dist
        zero = torch.zeros((), device=v.device)
        logp = dist.log_prob(params, m["actions"])
        a = m["adv"]
        if cfg.normalize_advantages and self.collective is not None:
            a = self.collective.standardize(a)  # the statistics of every rank's shard: the whole minibatch's
        elif cfg.normalize_advantages and a.numel() > 1:
            a = (a - a.mean()) / (a.std() + 1e-8)
        log_ratio = logp - m["old_logp"]
        if cfg.loss == "clip":
            loss_pi, clip_frac = ppo_clip_loss(logp, m["old_logp"], a, clip)
        elif cfg.loss == "kl_penalty":
            kl_per = dist.kl(m["old_params"], params)
            loss_pi = ppo_kl_penalty_loss(logp, m["old_logp"], a, kl_per, self.beta)
            clip_frac = zero
        else:
            loss_pi, clip_frac = policy_gradient_loss(logp, a), zero
        loss_v = value_loss(v, m["returns"], m["old_values"], clip if cfg.clip_value_loss else None)
        loss = loss_pi + cfg.vf_coef * loss_v
        if cfg.ent_coef > 0:
            ent = dist.entropy(params).mean()
            loss = loss - cfg.ent_coef * ent
        else:
            ent = zero
        return loss, loss_pi, loss_v, ent, clip_frac, log_ratio

    @torch.no_grad()
    def _vtrace(self, r: dict[str, torch.Tensor], rewards: torch.Tensor, discounts: torch.Tensor, values: torch.Tensor,
                bootstrap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """V-trace advantages and value targets of a rollout acted with (possibly older) behaviour parameters."""
        cfg = self.cfg
        T, B = rewards.shape
        params, _ = self.net(r["obs"].reshape(T * B, *r["obs"].shape[2:]))
        target_logp = self.net.dist.log_prob(params, r["actions"].reshape(T * B, *r["actions"].shape[2:])).reshape(T, B)
        out = vtrace(target_logp - r["log_probs"], discounts, rewards, values, bootstrap,
                     cfg.vtrace_clip_rho, cfg.vtrace_clip_c, cfg.vtrace_clip_pg_rho, lambda_=cfg.vtrace_lambda)
        return out.pg_advantages, out.vs

    def state(self) -> dict[str, Any]:
        return {"networks": self.net.state_dict(), "optimizer": optimizer_state(self.opt), "generator": self.gen.get_state(),
                "version": self.version, "env_steps": self.env_steps, "beta": self.beta}

    def load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["networks"])
        load_optimizer_state(self.opt, state["optimizer"])
        self.gen.set_state(state["generator"])
        self.version = int(state["version"])
        self.env_steps = int(state["env_steps"])
        self.beta = float(state["beta"])
