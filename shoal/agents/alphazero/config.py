"""AlphaZero's settings: search, network, self-play and learning."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.config import in_range, positive, require


@dataclass
class AlphaZeroConfig:
    """Hyperparameters of AlphaZero (and its AlphaGo / AlphaGo Zero variants)."""

    # -- search -------------------------------------------------------------------------------
    simulations: int = 50
    """Network-evaluated simulations per self-play move."""
    eval_simulations: int = 0
    """Simulations per move of the trained engine (0: the same as simulations); recorded as the engine's default."""
    leaf_batch: int = 8
    """Leaves each tree gathers under virtual loss before one batched network call."""
    c_puct: float = 1.5
    """Exploration constant of PUCT."""
    virtual_loss: float = 1.0
    """Visits, each valued as a loss, added to an edge while a descent through it awaits evaluation."""
    dirichlet_alpha: float = 0.3
    """Concentration of the Dirichlet noise on the self-play root priors."""
    noise_frac: float = 0.25
    """Weight of that noise (0: none)."""
    temperature_moves: int = 8
    """Self-play moves played with temperature 1 (visit-proportional); after them the most visited move."""
    # -- network --------------------------------------------------------------------------------
    torso: str = "res"
    """Network torso: res (residual tower, AlphaGo Zero) or conv (plain convolutions)."""
    dual: bool = True
    """One network with policy and value heads (AlphaGo Zero); false: separate policy and value networks (AlphaGo)."""
    channels: int = 32
    """Convolution channels of the torso."""
    blocks: int = 2
    """Residual blocks (res) or extra conv layers after the first (conv)."""
    value_hidden: int = 32
    """Hidden units of the value head."""
    # -- self-play ------------------------------------------------------------------------------
    games_per_actor: int = 8
    """Games each self-play actor plays at once (their leaves share network calls)."""
    augment: bool = True
    """Write every board symmetry of each position to replay."""
    # -- learning -------------------------------------------------------------------------------
    lr: float = 2e-3
    """Adam learning rate."""
    l2: float = 1e-4
    """L2 penalty coefficient c in (z - v)^2 - pi log p + c ||theta||^2."""
    value_coef: float = 1.0
    """Weight of the value loss."""
    batch_size: int = 128
    """Positions per gradient step."""
    buffer_size: int = 20_000
    """Items held in the replay table, newest kept (with augment, each position is 8 or 2 items)."""
    min_replay: int = 256
    """Items in replay before learning starts."""
    replay_ratio: float = 4.0
    """Positions sampled for learning per self-play position written (symmetric copies count once)."""
    # -- evaluation gate (AlphaGo Zero) ------------------------------------------------------
    gate: bool = False
    """Keep a best network that self-play uses, replaced only when a candidate wins gate_threshold of gate_games."""
    gate_every: int = 200
    """Learner updates between gate evaluations."""
    gate_games: int = 20
    """Games per gate evaluation (colours alternated)."""
    gate_threshold: float = 0.55
    """Score (wins + draws/2) a candidate needs to replace the best network."""
    gate_simulations: int = 25
    """Simulations per move in gate games."""
    # -- supervised pretraining (AlphaGo's first stage) ------------------------------------
    pretrain_games: int = 0
    """Games of the MCTS-Solver baseline to pretrain the policy on before self-play (0: none)."""
    pretrain_dataset: str = ""
    """A text file of games (one per line, space-separated actions) to pretrain the policy on instead of baseline games."""
    pretrain_simulations: int = 200
    """Baseline simulations per move when generating those games."""
    pretrain_epochs: int = 4
    """Passes over the pretraining positions."""
    # -- measuring strength ------------------------------------------------------------------
    eval_games: int = 20
    """Games against each baseline in evaluations (colours alternated)."""
    baseline_simulations: int = 1000
    """Simulations per move of the MCTS-Solver baseline in evaluations."""

    def __post_init__(self) -> None:
        positive(self, "simulations", "leaf_batch", "c_puct", "channels", "value_hidden", "games_per_actor", "lr",
                 "batch_size", "buffer_size", "replay_ratio", "gate_every", "gate_games", "gate_simulations",
                 "pretrain_simulations", "pretrain_epochs", "baseline_simulations")
        require(self.simulations >= 2, f"simulations must be >= 2 for self-play (its policy target is the root's visits), "
                f"got {self.simulations}")
        require(self.torso in ("res", "conv"), f"torso must be res or conv, got {self.torso!r}")
        require(self.blocks >= 0, f"blocks must be >= 0, got {self.blocks}")
        require(self.eval_simulations >= 0, f"eval_simulations must be >= 0, got {self.eval_simulations}")
        require(self.virtual_loss >= 0, f"virtual_loss must be >= 0, got {self.virtual_loss}")
        require(self.dirichlet_alpha > 0, f"dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        in_range(self, "noise_frac", 0.0, 1.0)
        in_range(self, "gate_threshold", 0.0, 1.0)
        require(self.temperature_moves >= 0 and self.pretrain_games >= 0 and self.eval_games >= 0 and self.l2 >= 0,
                "temperature_moves, pretrain_games, eval_games and l2 must be >= 0")
        require(self.min_replay <= self.buffer_size,
                f"min_replay ({self.min_replay}) must not exceed buffer_size ({self.buffer_size}); lower min_replay")

    @property
    def engine_simulations(self) -> int:
        """The engine's default search size."""
        return self.eval_simulations or self.simulations
