"""Reward learned from preferences (Christiano et al. 2017): an ensemble reward model trained on labelled
segment pairs, and SAC and PPO trained on it instead of the env's reward."""
