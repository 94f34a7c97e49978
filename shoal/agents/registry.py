"""The algorithm registry: name -> config class, builder and default topology.

Entries name their modules as strings so that ``shoal list`` and config validation
do not import every algorithm.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from shoal.errors import ConfigError


@dataclass(frozen=True)
class AlgoSpec:
    """How to build one algorithm."""

    name: str
    config: str  # "module:Class" of the config dataclass
    builder: str  # "module:Class" of the Builder
    topology: str  # default topology
    summary: str

    def config_cls(self) -> type:
        return _load(self.config)

    def builder_cls(self) -> type:
        return _load(self.builder)

    def defaults(self, env_id: str) -> dict[str, Any]:
        """Per-env default hyperparameters shipped in ``shoal/configs/<algo>.yaml``."""
        try:
            text = resources.files("shoal.configs").joinpath(f"{self.name}.yaml").read_text()
        except FileNotFoundError:
            return {}
        table = yaml.safe_load(text) or {}
        out = dict(table.get("default", {}) or {})
        bare = env_id.split("/", 1)[-1] if env_id.startswith("shoal/") else env_id
        for key in (bare, env_id):
            out.update(table.get(key, {}) or {})
        return out


def _load(path: str) -> Any:
    mod, _, name = path.partition(":")
    return getattr(importlib.import_module(mod), name)


ALGORITHMS: dict[str, AlgoSpec] = {}


def register(spec: AlgoSpec) -> None:
    """Add an algorithm (later registrations of the same name replace earlier ones)."""
    ALGORITHMS[spec.name] = spec


def get(name: str) -> AlgoSpec:
    """The spec of algorithm ``name`` or a ConfigError listing the known ones."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(ALGORITHMS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(ALGORITHMS))}"
        raise ConfigError(f"unknown algorithm {name!r}; {hint}") from None


_PG = "shoal.agents.pg"
register(AlgoSpec("ppo", f"{_PG}.config:PPOConfig", f"{_PG}.builder:ActorCriticBuilder", "local",
                  "Proximal Policy Optimization (clipped surrogate or adaptive KL penalty)"))
register(AlgoSpec("a2c", f"{_PG}.config:A2CConfig", f"{_PG}.builder:ActorCriticBuilder", "local",
                  "synchronous advantage actor-critic"))
register(AlgoSpec("impala", f"{_PG}.config:ImpalaConfig", f"{_PG}.builder:ActorCriticBuilder", "impala",
                  "IMPALA: actors with a lagged policy feed a queue; the learner corrects the lag with V-trace"))
register(AlgoSpec("a3c", f"{_PG}.config:A3CConfig", f"{_PG}.builder:ActorCriticBuilder", "a3c",
                  "A3C: workers compute actor-critic gradients and push them to a parameter node, no barrier"))
register(AlgoSpec("ga3c", f"{_PG}.config:GA3CConfig", f"{_PG}.builder:ActorCriticBuilder", "ga3c",
                  "GA3C: agents without networks, a batching predictor and a batching trainer joined by queues"))
register(AlgoSpec("appo", f"{_PG}.config:APPOConfig", f"{_PG}.builder:ActorCriticBuilder", "impala",
                  "APPO: PPO's clipped objective on V-trace advantages, on the asynchronous IMPALA topology"))
register(AlgoSpec("dppo", f"{_PG}.config:DPPOConfig", f"{_PG}.builder:ActorCriticBuilder", "dppo",
                  "DPPO: workers compute PPO gradients; a chief averages the first M of N each round, drops late ones"))

_TAB = "shoal.agents.tabular"
register(AlgoSpec("q_learning", f"{_TAB}.config:QLearningConfig", f"{_TAB}.builder:TabularBuilder", "local",
                  "tabular Q-learning, epsilon-greedy (Discrete observations and actions)"))
register(AlgoSpec("sarsa", f"{_TAB}.config:SarsaConfig", f"{_TAB}.builder:TabularBuilder", "local",
                  "tabular Sarsa, on-policy TD control (Discrete observations and actions)"))
register(AlgoSpec("sarsa_lambda", f"{_TAB}.config:SarsaLambdaConfig", f"{_TAB}.builder:TabularBuilder", "local",
                  "tabular Sarsa(lambda) with accumulating or replacing eligibility traces"))
register(AlgoSpec("dyna_q", f"{_TAB}.config:DynaQConfig", f"{_TAB}.dyna:DynaQBuilder", "local",
                  "tabular Dyna-Q: Q-learning plus planning with a learned model; plus=true for Dyna-Q+"))
register(AlgoSpec("reinforce", f"{_PG}.reinforce:ReinforceConfig", f"{_PG}.reinforce:ReinforceBuilder", "local",
                  "REINFORCE: episodic Monte-Carlo policy gradient, optional learned baseline"))
register(AlgoSpec("actor_critic", f"{_PG}.one_step_ac:OneStepACConfig", f"{_PG}.one_step_ac:OneStepACBuilder", "local",
                  "one-step actor-critic: online TD(0) critic, TD error weights the policy gradient"))

_DQN = "shoal.agents.dqn"
register(AlgoSpec("dqn", f"{_DQN}.config:DQNConfig", f"{_DQN}.builder:DQNBuilder", "local",
                  "DQN with flags for Double, Dueling, prioritized replay, n-step returns, Polyak targets"))
register(AlgoSpec("apex_dqn", f"{_DQN}.config:ApexDQNConfig", f"{_DQN}.builder:DQNBuilder", "apex",
                  "Ape-X DQN: N actors with their own epsilons, actor-computed priorities, one prioritized replay"))
register(AlgoSpec("gorila", f"{_DQN}.config:GorilaConfig", f"{_DQN}.builder:DQNBuilder", "gorila",
                  "GORILA DQN: actor-replay-learner bundles; learners push gradients to a sharded parameter server"))

register(AlgoSpec("hdqn", "shoal.agents.hdqn.config:HDQNConfig", "shoal.agents.hdqn.builder:HDQNBuilder", "local",
                  "h-DQN: a meta-controller DQN picks goals, a controller DQN reaches them for intrinsic reward"))

_R2D2 = "shoal.agents.r2d2"
register(AlgoSpec("r2d2", f"{_R2D2}.config:R2D2Config", f"{_R2D2}.builder:R2D2Builder", "local",
                  "R2D2: recurrent Q-network from stored-state sequences with burn-in, n-step Double Q, value rescaling"))
register(AlgoSpec("apex_r2d2", f"{_R2D2}.config:ApexR2D2Config", f"{_R2D2}.builder:R2D2Builder", "apex",
                  "distributed R2D2: N actors with their own epsilons, actor-computed sequence priorities, one replay"))

_CONT = "shoal.agents.continuous"
register(AlgoSpec("ddpg", f"{_CONT}.config:DDPGConfig", f"{_CONT}.builder:ContinuousBuilder", "local",
                  "DDPG: deterministic policy gradient, target networks, Gaussian or OU exploration noise"))
register(AlgoSpec("td3", f"{_CONT}.config:TD3Config", f"{_CONT}.builder:ContinuousBuilder", "local",
                  "TD3: twin critics, target policy smoothing, delayed policy updates"))
register(AlgoSpec("sac", f"{_CONT}.config:SACConfig", f"{_CONT}.builder:ContinuousBuilder", "local",
                  "SAC: tanh-squashed Gaussian policy, twin critics, automatic entropy temperature"))
register(AlgoSpec("apex_ddpg", f"{_CONT}.config:ApexDDPGConfig", f"{_CONT}.builder:ContinuousBuilder", "apex",
                  "Ape-X DPG: N actors with their own noise scales, actor-computed priorities, one prioritized replay"))
register(AlgoSpec("d4pg", f"{_CONT}.config:D4PGConfig", f"{_CONT}.builder:ContinuousBuilder", "local",
                  "D4PG: DDPG with a categorical distributional critic, n-step prioritized replay"))
register(AlgoSpec("apex_d4pg", f"{_CONT}.config:ApexD4PGConfig", f"{_CONT}.builder:ContinuousBuilder", "apex",
                  "D4PG on Ape-X: N actors with their own noise scales, actor-computed cross-entropy priorities"))

_PREF = "shoal.agents.preference"
register(AlgoSpec("pref_sac", f"{_PREF}.config:PrefSACConfig", f"{_CONT}.preference:PrefSACBuilder", "local",
                  "SAC on a reward learned from preferences over segment pairs (oracle or a person at the terminal)"))
register(AlgoSpec("pref_ppo", f"{_PREF}.config:PrefPPOConfig", f"{_PG}.preference:PrefPPOBuilder", "local",
                  "PPO on a reward learned from preferences over segment pairs (oracle or a person at the terminal)"))

_AZ = "shoal.agents.alphazero"
register(AlgoSpec("alphazero", f"{_AZ}.config:AlphaZeroConfig", f"{_AZ}.builder:AlphaZeroBuilder", "alphazero",
                  "AlphaZero: PUCT search with a policy-value network, improved by self-play (board games)"))

_OFF = "shoal.agents.offline"
register(AlgoSpec("bc", f"{_OFF}.config:BCConfig", f"{_OFF}.builder:OfflineBuilder", "offline",
                  "behaviour cloning from a dataset (--dataset): cross-entropy or tanh-Gaussian fit, early stopping"))
register(AlgoSpec("cql", f"{_OFF}.config:CQLConfig", f"{_OFF}.builder:OfflineBuilder", "offline",
                  "conservative Q-learning from a dataset: CQL(H) on DQN (discrete) or SAC (continuous)"))
register(AlgoSpec("offline_dqn", f"{_OFF}.config:NaiveOfflineConfig", f"{_OFF}.builder:OfflineDQNBuilder", "offline",
                  "naive offline DQN: the DQN learner on a dataset, no CQL term"))
register(AlgoSpec("offline_sac", f"{_OFF}.config:NaiveOfflineConfig", f"{_OFF}.builder:OfflineSACBuilder", "offline",
                  "naive offline SAC: the SAC learner on a dataset, no CQL term"))
