"""Continuous control: DDPG, TD3, SAC and Ape-X DPG on Box action spaces."""
