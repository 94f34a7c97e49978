"""Offline RL from datasets: behaviour cloning, CQL, naive offline DQN and SAC."""
