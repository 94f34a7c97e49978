"""The DQN family: DQN, Double DQN, Dueling, prioritized replay, n-step returns, and Ape-X DQN."""
