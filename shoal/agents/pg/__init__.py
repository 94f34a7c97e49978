"""Policy-gradient family on one actor-critic core: PPO (clip / KL penalty) and A2C."""
