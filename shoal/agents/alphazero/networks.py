"""AlphaGo Zero's dual network and AlphaGo's separate policy and value networks.

A torso of 3x3 convolutions (a residual tower, or plain layers) reads the board planes;
the policy head gives one logit per action, the value head a tanh value for the side to
move. ``dual=False`` builds two such networks, one per head, as AlphaGo did.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from shoal.agents.alphazero.config import AlphaZeroConfig


class ResBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a skip connection."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch)
        self.c2, self.b2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(x + self.b2(self.c2(y)))


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def make_torso(kind: str, in_planes: int, channels: int, blocks: int) -> nn.Sequential:
    """A residual tower (``res``) or plain convolutions (``conv``): ``1 + 2 * blocks`` conv layers either way."""
    layers: list[nn.Module] = [_conv(in_planes, channels)]
    for _ in range(blocks):
        layers += [ResBlock(channels)] if kind == "res" else [_conv(channels, channels), _conv(channels, channels)]
    return nn.Sequential(*layers)


class PolicyHead(nn.Module):
    """1x1 conv to 2 planes, then a linear layer to one logit per action."""

    def __init__(self, ch: int, cells: int, num_actions: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(ch, 2, 1, bias=False), nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * cells, num_actions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class ValueHead(nn.Module):
    """1x1 conv to 1 plane, a hidden layer, a tanh value."""

    def __init__(self, ch: int, cells: int, hidden: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(ch, 1, 1, bias=False), nn.BatchNorm2d(1)
        self.fc1, self.fc2 = nn.Linear(cells, hidden), nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(torch.relu(self.bn(self.conv(x))).flatten(1)))
        return torch.tanh(self.fc2(h)).squeeze(-1)


class PolicyValueNet(nn.Module):
    """``planes [B, C, H, W] -> (logits [B, A], value [B])``, one torso (dual) or two."""

    def __init__(self, in_planes: int, rows: int, cols: int, num_actions: int, torso: str = "res", dual: bool = True,
                 channels: int = 32, blocks: int = 2, value_hidden: int = 32) -> None:
        super().__init__()
        cells = rows * cols
        self.dual = dual
        self.torso = make_torso(torso, in_planes, channels, blocks)
        self.value_torso = None if dual else make_torso(torso, in_planes, channels, blocks)
        self.policy_head = PolicyHead(channels, cells, num_actions)
        self.value_head = ValueHead(channels, cells, value_hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.torso(x)
        hv = h if self.value_torso is None else self.value_torso(x)
        return self.policy_head(h), self.value_head(hv)

    def policy_parameters(self) -> list[nn.Parameter]:
        """Parameters the policy output depends on (what supervised pretraining trains)."""
        return list(self.torso.parameters()) + list(self.policy_head.parameters())


def make_network(cfg: AlphaZeroConfig, in_planes: int, rows: int, cols: int, num_actions: int) -> PolicyValueNet:
    """The network ``cfg`` describes for a game's board."""
    return PolicyValueNet(in_planes, rows, cols, num_actions, cfg.torso, cfg.dual, cfg.channels, cfg.blocks,
                          cfg.value_hidden)


class NetworkEvaluator:
    """A network as an MCTS evaluator: masked softmax priors and values, in eval mode, without gradients."""

    def __init__(self, net: PolicyValueNet) -> None:
        self.net = net

    @torch.no_grad()
    def __call__(self, planes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.net.eval()
        logits, values = self.net(torch.as_tensor(planes, dtype=torch.float32))
        return masked_priors(logits, torch.as_tensor(masks)).numpy(), values.numpy().astype(np.float64)


def masked_priors(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Softmax over the legal actions only (illegal ones get probability 0)."""
    return torch.softmax(logits.masked_fill(~masks.bool(), float("-inf")), dim=-1).nan_to_num(0.0)
