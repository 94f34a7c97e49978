"""Each agent's evaluation policy as a plain torch module, for export (ONNX, TorchScript).

``greedy_module(builder, networks)`` returns a module computing what the agent's evaluation
policy (``builder.make_policy(networks, evaluation=True)``) computes, normalisation included:

- actor-critics (PPO, A2C, IMPALA, ...): argmax of the logits, or the Gaussian mean clipped
  to the action bounds (evaluation clips actions to them);
- Q-learners (DQN family, R2D2, tabular): the argmax of the action values (ties to the first action);
- DDPG and TD3: the deterministic actor ``mu(obs)``; SAC: ``tanh(mean)``; both scaled to the
  action bounds (and clipped to them, as evaluation clips);
- recurrent policies (LSTM actor-critics, R2D2): one step ``(obs, h, c, episode_start) ->
  (action, h, c)`` of the policy's LSTM, whose state is zeroed where ``episode_start`` is set.

The modules use only tensor operations that trace (no numpy fast paths), so
``torch.jit.trace`` and ``torch.onnx.export`` capture them; their inputs have a leading
batch axis.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shoal.agents.continuous.networks import ContinuousNetworks
from shoal.agents.dqn.networks import QNetwork
from shoal.agents.pg.networks import ActorCritic
from shoal.agents.pg.recurrent import RecurrentActorCritic
from shoal.agents.r2d2.networks import RecurrentQNetwork
from shoal.agents.tabular.networks import QTable
from shoal.errors import ConfigError


class GreedyActorCritic(nn.Module):
    """``obs -> action``: the mode of an actor-critic's policy (argmax, or the mean clipped to the bounds)."""

    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, net: ActorCritic, low: Any = None, high: Any = None) -> None:
        super().__init__()
        self.net = net
        self.discrete = net.dist.__name__ == "Categorical"
        if not self.discrete:
            self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        params, _ = self.net(obs)
        action = self.net.dist.mode(params)
        return action if self.discrete else torch.maximum(torch.minimum(action, self.high), self.low)


class GreedyQ(nn.Module):
    """``obs -> argmax_a Q(obs, a)`` of a Q-network or a Q-table."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).argmax(-1)


class GreedyContinuous(nn.Module):
    """``obs -> action`` in the env's bounds: ``mu(obs)`` (DDPG, TD3) or ``tanh(mean)`` (SAC), rescaled.

    The rescaled action is clipped to ``[low, high]`` as evaluation clips it: in float32,
    ``bias + scale * 1`` can land a rounding step outside the bounds.
    """

    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, net: ContinuousNetworks, low: Any, high: Any) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.net.normalize(obs)
        out = self.net.policy.net(x)  # the policy's Linear/activation stack, unfused
        if self.net.stochastic:
            out = out.chunk(2, dim=-1)[0]
        action = self.net.scale_action(torch.tanh(out))
        return torch.maximum(torch.minimum(action, self.high), self.low)


class GreedyRecurrent(nn.Module):
    """One step of an LSTM policy: ``(obs[B], h, c, episode_start[B]) -> (action[B], h, c)``.

    ``h`` and ``c`` are ``[lstm_layers, B, lstm_hidden]``; start every env copy with zeros (or
    ``episode_start`` set: the state entering that step is zeroed, as the agent's own does).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero ``(h, c)`` for ``batch`` env copies."""
        h, c = self.net.initial_state(batch)[:2]  # type: ignore[operator]
        return h, c


class GreedyRecurrentActorCritic(GreedyRecurrent):
    """The mode of an LSTM actor-critic's policy (argmax, or the mean clipped to the bounds), one step at a time.

    Only the policy LSTM's state is carried: a critic LSTM does not change the actions.
    """

    net: RecurrentActorCritic
    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, net: RecurrentActorCritic, low: Any = None, high: Any = None) -> None:
        super().__init__(net)
        self.extra_states = len(net.initial_state(1)) - 2  # a critic LSTM's (h, c), unused for acting
        self.discrete = net.dist.__name__ == "Categorical"
        if not self.discrete:
            self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def forward(self, obs: torch.Tensor, h: torch.Tensor, c: torch.Tensor, episode_start: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        state = (h, c, *(torch.zeros_like(h) for _ in range(self.extra_states)))
        params, _, new_state = self.net.step(obs, state, episode_start.to(torch.bool))
        action = self.net.dist.mode(params)
        if not self.discrete:
            action = torch.maximum(torch.minimum(action, self.high), self.low)
        return action, new_state[0], new_state[1]


class GreedyRecurrentQ(GreedyRecurrent):
    """``argmax_a Q(obs, a)`` of a recurrent Q-network (R2D2), one step at a time."""

    net: RecurrentQNetwork

    def forward(self, obs: torch.Tensor, h: torch.Tensor, c: torch.Tensor, episode_start: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, (h, c) = self.net.step(obs, (h, c), episode_start.to(torch.bool))
        return q.argmax(-1), h, c


def greedy_module(builder: Any, networks: nn.Module) -> nn.Module:
    """The evaluation policy of ``builder``'s agent over ``networks`` as a traceable module (in eval mode)."""
    spec = builder.env_spec
    module: nn.Module
    if isinstance(networks, RecurrentActorCritic):
        module = GreedyRecurrentActorCritic(networks, spec.action_low, spec.action_high)
    elif isinstance(networks, RecurrentQNetwork):
        module = GreedyRecurrentQ(networks)
    elif isinstance(networks, ActorCritic):
        module = GreedyActorCritic(networks, spec.action_low, spec.action_high)
    elif isinstance(networks, (QNetwork, QTable)):
        module = GreedyQ(networks)
    elif isinstance(networks, ContinuousNetworks):
        module = GreedyContinuous(networks, spec.action_low, spec.action_high)
    else:
        raise ConfigError(f"policies of {type(builder).__name__} ({type(networks).__name__}) cannot be exported; "
                          "export an actor-critic, DQN-family, R2D2, DDPG/TD3/SAC or tabular run")
    return module.eval()
