"""Supervised pretraining of the policy on a dataset of games (AlphaGo's first stage).

A dataset is a list of games, each the list of its action indices from the start position
(the text form: one game per line, space-separated). Every position of every game becomes
an item (board planes, the move played there as a one-hot target), with its symmetric copies;
the policy part of the network (torso and policy head) is trained by cross-entropy on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from shoal.agents.alphazero.baseline import MCTSSolver
from shoal.agents.alphazero.networks import PolicyValueNet
from shoal.agents.alphazero.player import play_game
from shoal.envs.games import Game, IllegalMoveError
from shoal.errors import ConfigError
from shoal.nets.optim import Adam


def baseline_games(new_game: Callable[[], Game], games: int, simulations: int, seed: int) -> list[list[int]]:
    """``games`` games of the MCTS-Solver baseline against itself (its random rollouts vary them)."""
    solver = MCTSSolver(simulations, seed=seed)
    return [play_game(new_game, solver, solver).history for _ in range(games)]


def read_games(path: str | Path) -> list[list[int]]:
    """Games from a text file: one per line, its moves as space-separated action indices."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read the games file {str(path)!r} ({e.strerror}); pass an existing file") from None
    try:
        return [[int(x) for x in ln.split()] for ln in lines if ln.strip()]
    except ValueError:
        raise ConfigError(f"{path}: every line must be space-separated action numbers") from None


def policy_dataset(new_game: Callable[[], Game], games: list[list[int]], augment: bool = True) -> dict[str, np.ndarray]:
    """``{"planes", "pi"}``: each position of ``games`` with the move played (one-hot), symmetric copies too."""
    planes, pis = [], []
    for k, moves in enumerate(games):
        g = new_game()
        for a in moves:
            if not g.is_legal(a):
                raise IllegalMoveError(f"game {k} of the dataset plays the illegal move {a} after {g.history}; fix the dataset")
            target = np.zeros(g.num_actions, np.float32)
            target[a] = 1.0
            p = g.planes()
            for sp, spi in (g.symmetries(p, target) if augment else [(p, target)]):
                planes.append(sp)
                pis.append(spi)
            g.play(a)
    g0 = new_game()
    return {"planes": np.asarray(planes, np.float32).reshape(-1, g0.num_planes, g0.rows, g0.cols),
            "pi": np.asarray(pis, np.float32).reshape(-1, g0.num_actions)}


def pretrain_policy(net: PolicyValueNet, data: dict[str, np.ndarray], epochs: int, batch_size: int, lr: float,
                    seed: int) -> dict[str, float]:
    """Cross-entropy training of the policy parameters on ``data``; the first and last epoch's mean loss and accuracy."""
    params = net.policy_parameters()
    opt = Adam(params, lr=lr)
    n = len(data["pi"])
    rng = np.random.default_rng(seed)
    planes, pi = torch.as_tensor(data["planes"]), torch.as_tensor(data["pi"])
    history: list[tuple[float, float]] = []
    net.train()
    for _ in range(epochs):
        order = torch.as_tensor(rng.permutation(n))
        losses, hits = [], 0.0
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            logits, _ = net(planes[idx])
            loss = -(pi[idx] * torch.log_softmax(logits, -1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()) * len(idx))
            hits += float((logits.argmax(-1) == pi[idx].argmax(-1)).sum())
        history.append((sum(losses) / n, hits / n))
    return {"pretrain_positions": float(n), "pretrain_loss_first": history[0][0], "pretrain_loss_last": history[-1][0],
            "pretrain_accuracy_last": history[-1][1]}
