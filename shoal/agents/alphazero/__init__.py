"""AlphaZero: PUCT search guided by a policy-value network, trained by self-play, for board games."""
